//! Read and delivered marks, coalesced (reference im.md §5.4 step 5): at most one `IM_READ`
//! and one `IM_RECV` per conversation per period (1 s), each with the highest seq asked for
//! since the last one. Marks only move up.

use crate::state::{ConvKey, conv_ref, key};
use starling_proto::im::v1::{ConvRef, MarkReq};
use starling_proto::op;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The period of the contract: one mark per second per conversation and kind.
pub const MARK_EVERY: Duration = Duration::from_secs(1);

/// Which mark: `IM_READ` (28) or `IM_RECV` (30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkKind {
    Read,
    Delivered,
}

impl MarkKind {
    /// The request op.
    pub fn op(self) -> i32 {
        match self {
            MarkKind::Read => op::im::READ,
            MarkKind::Delivered => op::im::RECV,
        }
    }
}

#[derive(Debug)]
pub struct Marks {
    every: Duration,
    pending: BTreeMap<(MarkKind, ConvKey), u64>,
    sent: HashMap<(MarkKind, ConvKey), (u64, Instant)>,
}

impl Default for Marks {
    fn default() -> Self {
        Marks::new(MARK_EVERY)
    }
}

impl Marks {
    pub fn new(every: Duration) -> Self {
        Marks {
            every,
            pending: BTreeMap::new(),
            sent: HashMap::new(),
        }
    }

    /// Asks for a mark at `seq`; ignored if one at or above it was sent or is pending.
    pub fn mark(&mut self, kind: MarkKind, conv: ConvRef, seq: u64) {
        let k = (kind, key(&conv));
        if self.sent.get(&k).is_some_and(|(s, _)| *s >= seq) {
            return;
        }
        let p = self.pending.entry(k).or_insert(seq);
        *p = (*p).max(seq);
    }

    /// The marks to send now, recorded as sent at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<(MarkKind, MarkReq)> {
        let ready: Vec<_> = self
            .pending
            .keys()
            .filter(|k| {
                self.sent
                    .get(k)
                    .is_none_or(|(_, at)| now >= *at + self.every)
            })
            .copied()
            .collect();
        ready
            .into_iter()
            .map(|k| {
                let seq = self.pending.remove(&k).expect("pending");
                self.sent.insert(k, (seq, now));
                (
                    k.0,
                    MarkReq {
                        conv: Some(conv_ref(k.1)),
                        seq,
                    },
                )
            })
            .collect()
    }

    /// When the next pending mark may go.
    pub fn next_at(&self) -> Option<Instant> {
        self.pending
            .keys()
            .map(|k| {
                self.sent
                    .get(k)
                    .map_or(Instant::now(), |(_, at)| *at + self.every)
            })
            .min()
    }

    /// A mark that did not reach the server (connection lost): ask again.
    pub fn retry(&mut self, kind: MarkKind, conv: ConvRef, seq: u64) {
        let k = (kind, key(&conv));
        if self.sent.get(&k).is_some_and(|(s, _)| *s == seq) {
            self.sent.remove(&k);
        }
        self.mark(kind, conv, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::im::v1::ConvKind;

    fn c(id: i64) -> ConvRef {
        ConvRef {
            kind: ConvKind::P2p as i32,
            id,
        }
    }

    #[test]
    fn marks_coalesce_to_one_per_second_per_conversation() {
        let t = Instant::now();
        let mut m = Marks::default();
        m.mark(MarkKind::Read, c(1), 3);
        m.mark(MarkKind::Read, c(1), 5);
        m.mark(MarkKind::Read, c(1), 4);
        m.mark(MarkKind::Read, c(2), 1);
        m.mark(MarkKind::Delivered, c(1), 9);
        let first = m.due(t);
        assert_eq!(first.len(), 3);
        assert_eq!(
            first
                .iter()
                .find(|(k, r)| *k == MarkKind::Read && r.conv == Some(c(1)))
                .unwrap()
                .1
                .seq,
            5
        );
        m.mark(MarkKind::Read, c(1), 5);
        assert!(m.due(t).is_empty(), "already sent");
        m.mark(MarkKind::Read, c(1), 8);
        m.mark(MarkKind::Read, c(1), 9);
        assert!(
            m.due(t + Duration::from_millis(999)).is_empty(),
            "within the second"
        );
        assert_eq!(m.next_at(), Some(t + MARK_EVERY));
        let second = m.due(t + MARK_EVERY);
        assert_eq!((second.len(), second[0].1.seq), (1, 9));
    }

    #[test]
    fn a_lost_mark_is_sent_again() {
        let t = Instant::now();
        let mut m = Marks::default();
        m.mark(MarkKind::Read, c(1), 3);
        assert_eq!(m.due(t).len(), 1);
        m.retry(MarkKind::Read, c(1), 3);
        assert_eq!(m.due(t).len(), 1);
    }
}

//! What the soak's senders were told, and the end-of-run check of it against the stored logs:
//! every acknowledged message (code 0, or 503 with `stored = true`: durable by the protocol,
//! reference im.md §5.3-5.4) must be in its conversation's log exactly once, at the seq its
//! ack named, and each sender's messages in the order it sent them (im.md §9 T3).

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A conversation, the same from both sides: P2P by its two uids (lower first), a group by
/// its gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvId {
    P2p(i64, i64),
    Group(i64),
}

impl ConvId {
    pub fn p2p(a: i64, b: i64) -> ConvId {
        ConvId::P2p(a.min(b), a.max(b))
    }
}

/// One acknowledged send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub sender: i64,
    /// The sender's own count: its n-th message (sent one at a time, so seqs follow n).
    pub n: u64,
    /// The seq the ack named.
    pub seq: u64,
}

/// A message as a pull returned it (the fields the check reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub seq: u64,
    pub sender: i64,
    pub client_msg_id: String,
}

/// Every acknowledged send of the run, by conversation and `client_msg_id`.
#[derive(Debug, Default)]
pub struct Ledger {
    acked: BTreeMap<ConvId, HashMap<String, Acked>>,
}

impl Ledger {
    /// Records an ack; a later ack of the same id (the retry after a 503 `stored = true`)
    /// keeps the first and returns whether the seqs differ (they must not).
    pub fn ack(&mut self, conv: ConvId, client_msg_id: &str, a: Acked) -> bool {
        let entry = self.acked.entry(conv).or_default();
        match entry.get(client_msg_id) {
            Some(first) => first.seq != a.seq,
            None => {
                entry.insert(client_msg_id.to_string(), a);
                false
            }
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.values().map(|m| m.len() as u64).sum()
    }

    /// Every conversation with its acknowledged sends, by `client_msg_id`.
    pub fn into_conversations(self) -> BTreeMap<ConvId, HashMap<String, Acked>> {
        self.acked
    }
}

/// The check of one or more conversations; every count but `acked` and `found` must be 0.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub acked: u64,
    /// Acknowledged messages found in the log (once or more).
    pub found: u64,
    /// Acknowledged, not in the log.
    pub lost: u64,
    /// Extra copies of an acknowledged or a bench message in the log.
    pub duplicated: u64,
    /// Log seqs not contiguous and increasing, or a sender's later message at a lower seq.
    pub out_of_order: u64,
    /// In the log at another seq than its ack named.
    pub seq_mismatch: u64,
    /// A bench sender's message stored but never acknowledged (the sender gave up on it at
    /// the end of the run): not a loss, reported for the record.
    pub stored_not_acked: u64,
}

impl Check {
    pub fn add(&mut self, o: &Check) {
        self.acked += o.acked;
        self.found += o.found;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.seq_mismatch += o.seq_mismatch;
        self.stored_not_acked += o.stored_not_acked;
    }
}

/// Checks one conversation's full log (`log`, as pulled forward from its first seq) against
/// its acknowledged sends. `ours` tells a bench sender's message from the rest (system
/// notices), which count only for the seq order.
pub fn check(
    acked: &HashMap<String, Acked>,
    log: &[Logged],
    ours: impl Fn(&Logged) -> bool,
) -> Check {
    let mut c = Check {
        acked: acked.len() as u64,
        ..Check::default()
    };
    let mut copies: HashMap<&str, u64> = HashMap::new();
    let mut last_n: HashMap<i64, u64> = HashMap::new();
    let mut prev_seq: Option<u64> = None;
    for m in log {
        if prev_seq.is_some_and(|p| m.seq != p + 1) {
            c.out_of_order += 1;
        }
        prev_seq = Some(m.seq);
        if !ours(m) {
            continue;
        }
        let n = copies.entry(m.client_msg_id.as_str()).or_default();
        *n += 1;
        if *n > 1 {
            c.duplicated += 1;
            continue;
        }
        let Some(a) = acked.get(&m.client_msg_id) else {
            c.stored_not_acked += 1;
            continue;
        };
        c.found += 1;
        if a.seq != m.seq {
            c.seq_mismatch += 1;
        }
        let last = last_n.entry(a.sender).or_insert(a.n);
        if a.n < *last {
            c.out_of_order += 1;
        }
        *last = (*last).max(a.n);
    }
    c.lost = acked
        .keys()
        .filter(|id| !copies.contains_key(id.as_str()))
        .count() as u64;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(seq: u64, sender: i64, id: &str) -> Logged {
        Logged {
            seq,
            sender,
            client_msg_id: id.into(),
        }
    }

    fn acks(list: &[(&str, i64, u64, u64)]) -> HashMap<String, Acked> {
        list.iter()
            .map(|&(id, sender, n, seq)| (id.to_string(), Acked { sender, n, seq }))
            .collect()
    }

    fn ours(m: &Logged) -> bool {
        m.sender != 0
    }

    #[test]
    fn a_clean_log_checks_clean() {
        let a = acks(&[("7-0", 7, 0, 2), ("8-0", 8, 0, 3), ("7-1", 7, 1, 4)]);
        let log = [
            logged(1, 0, ""),
            logged(2, 7, "7-0"),
            logged(3, 8, "8-0"),
            logged(4, 7, "7-1"),
        ];
        let c = check(&a, &log, ours);
        assert_eq!(
            c,
            Check {
                acked: 3,
                found: 3,
                ..Check::default()
            }
        );
    }

    #[test]
    fn losses_duplicates_and_disorder_are_each_counted() {
        let a = acks(&[
            ("7-0", 7, 0, 1),
            ("7-1", 7, 1, 2),
            ("7-2", 7, 2, 3),
            ("7-3", 7, 3, 9),
        ]);
        // 7-1 stored twice, 7-2 before 7-1's seq order, 7-3 missing, one unacked id, a gap.
        let log = [
            logged(1, 7, "7-0"),
            logged(2, 7, "7-2"),
            logged(3, 7, "7-1"),
            logged(4, 7, "7-1"),
            logged(6, 7, "7-9"),
        ];
        let c = check(&a, &log, ours);
        assert_eq!(c.lost, 1, "7-3");
        assert_eq!(c.duplicated, 1, "7-1 twice");
        // 7-1 after 7-2 (sender order), and the gap 4 → 6.
        assert_eq!(c.out_of_order, 2);
        assert_eq!(c.seq_mismatch, 2, "7-2 at 2, 7-1 at 3");
        assert_eq!(c.stored_not_acked, 1, "7-9");
        assert_eq!(c.found, 3);
    }

    #[test]
    fn a_retried_ack_keeps_the_first_seq_and_flags_a_change() {
        let mut l = Ledger::default();
        let conv = ConvId::p2p(9, 3);
        assert_eq!(conv, ConvId::P2p(3, 9));
        let a = Acked {
            sender: 3,
            n: 0,
            seq: 5,
        };
        assert!(!l.ack(conv, "3-0", a));
        assert!(
            !l.ack(conv, "3-0", a),
            "the confirmation of a 503 stored=true"
        );
        assert!(l.ack(conv, "3-0", Acked { seq: 6, ..a }));
        assert_eq!(l.acked(), 1);
    }
}

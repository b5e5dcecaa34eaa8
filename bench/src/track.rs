//! Per-subscriber accounting: every delivery is checked against the set of messages that
//! subscriber should get, so loss, duplication and reordering are counted exactly, and its
//! latency goes into an HDR histogram.

use crate::wire::read_stamp;
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latencies are recorded in nanoseconds, up to a minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid bounds")
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .expect("serialize to memory");
    base64::engine::general_purpose::STANDARD.encode(out)
}

pub fn decode_histogram(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    Ok(Deserializer::new().deserialize(&mut &bytes[..])?)
}

/// Deliveries are also counted per interval of this length, for the timeline plot.
pub const TIMELINE_NS: u64 = 100_000_000;

/// Which messages a subscriber must receive.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub messages: u32,
    /// Room mode: every subscriber gets every message. Key mode: message `s` goes to the
    /// subscriber whose global index is `s % subscribers`.
    pub room_mode: bool,
    pub subscribers: u64,
}

impl Plan {
    /// How many messages subscriber `global` must receive.
    pub fn expected(&self, global: u64) -> u32 {
        if self.room_mode {
            return self.messages;
        }
        let m = u64::from(self.messages);
        if global >= m {
            0
        } else {
            (m - global).div_ceil(self.subscribers) as u32
        }
    }

    /// The bit a message occupies in its subscriber's set, or `None` if it is not theirs.
    fn slot(&self, global: u64, seq: u32) -> Option<usize> {
        if seq >= self.messages {
            return None;
        }
        if self.room_mode {
            return Some(seq as usize);
        }
        let s = u64::from(seq);
        (s % self.subscribers == global).then_some((s / self.subscribers) as usize)
    }
}

struct Sub {
    global: u64,
    seen: Box<[u64]>,
    distinct: u32,
    max_seq: Option<u32>,
}

/// Counters for one process's subscribers.
pub struct Tracker {
    plan: Plan,
    subs: Vec<Sub>,
    pub deliveries: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Deliveries not in the plan (a stray or corrupt message).
    pub unexpected: u64,
    pub hist: Histogram<u64>,
    pub first_ns: u64,
    pub last_ns: u64,
    timeline: BTreeMap<u64, u64>,
    /// Subscribers still missing a message (kept so `complete` is cheap on every wake-up).
    incomplete: usize,
}

impl Tracker {
    pub fn new(plan: Plan, globals: impl Iterator<Item = u64>) -> Self {
        let subs: Vec<Sub> = globals
            .map(|global| Sub {
                global,
                seen: vec![0u64; (plan.expected(global) as usize).div_ceil(64)].into(),
                distinct: 0,
                max_seq: None,
            })
            .collect();
        let incomplete = subs.iter().filter(|s| plan.expected(s.global) > 0).count();
        Tracker {
            incomplete,
            plan,
            subs,
            deliveries: 0,
            duplicated: 0,
            out_of_order: 0,
            unexpected: 0,
            hist: new_histogram(),
            first_ns: 0,
            last_ns: 0,
            timeline: BTreeMap::new(),
        }
    }

    /// Records one delivery to local subscriber `local`, received at `now_ns`.
    pub fn deliver(&mut self, local: usize, payload: &[u8], now_ns: u64) {
        self.deliveries += 1;
        if self.first_ns == 0 {
            self.first_ns = now_ns;
        }
        self.last_ns = now_ns;
        *self.timeline.entry(now_ns / TIMELINE_NS).or_default() += 1;
        let Some((seq, sent)) = read_stamp(payload) else {
            self.unexpected += 1;
            return;
        };
        let sub = &mut self.subs[local];
        let Some(slot) = self.plan.slot(sub.global, seq) else {
            self.unexpected += 1;
            return;
        };
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if sub.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        sub.seen[word] |= bit;
        sub.distinct += 1;
        if sub.distinct == self.plan.expected(sub.global) {
            self.incomplete -= 1;
        }
        match sub.max_seq {
            Some(m) if seq < m => self.out_of_order += 1,
            _ => sub.max_seq = Some(seq),
        }
        let _ = self.hist.record(now_ns.saturating_sub(sent).max(1_000));
    }

    /// Every subscriber has everything it was to get.
    pub fn complete(&self) -> bool {
        self.incomplete == 0
    }

    pub fn lost(&self) -> u64 {
        self.subs
            .iter()
            .map(|s| u64::from(self.plan.expected(s.global) - s.distinct))
            .sum()
    }

    pub fn result(&self, connected: u64, disconnected: BTreeMap<String, u64>) -> SubResult {
        SubResult {
            connected,
            counts: Counts {
                deliveries: self.deliveries,
                lost: self.lost(),
                duplicated: self.duplicated,
                out_of_order: self.out_of_order,
                unexpected: self.unexpected,
            },
            disconnected,
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            hist: encode_histogram(&self.hist),
            timeline: self.timeline.iter().map(|(&k, &v)| (k, v)).collect(),
            cpu_ns: 0,
        }
    }
}

/// What arrived, against the plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Deliveries not in the plan (a stray or corrupt message).
    pub unexpected: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.deliveries += o.deliveries;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

/// What one subscriber process reports at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubResult {
    pub connected: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Connections the server closed (or that failed) after they had joined, by reason.
    pub disconnected: BTreeMap<String, u64>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// V2-serialized HDR histogram of latencies in ns, base64.
    pub hist: String,
    /// (interval index of `TIMELINE_NS`, deliveries in it).
    pub timeline: Vec<(u64, u64)>,
    /// CPU time the subscriber process used from the moment every connection had joined to
    /// its result (reading, accounting, heartbeats), in ns.
    #[serde(default)]
    pub cpu_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stamp;

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let plan = Plan {
            messages: 4,
            room_mode: true,
            subscribers: 2,
        };
        let mut t = Tracker::new(plan, 0..2);
        for seq in [0, 2, 1, 1] {
            t.deliver(0, &stamp(seq, 10, 16), 5_000_000);
        }
        t.deliver(1, &stamp(3, 10, 16), 5_000_000);
        t.deliver(1, b"short", 5_000_000);
        assert_eq!(t.deliveries, 6);
        assert_eq!((t.duplicated, t.out_of_order, t.unexpected), (1, 1, 1));
        assert_eq!(t.lost(), 1 + 3);
        assert!(!t.complete());
        assert_eq!(t.hist.len(), 4);
        let r = t.result(2, BTreeMap::new());
        let h = decode_histogram(&r.hist).unwrap();
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn key_mode_gives_each_message_to_one_subscriber() {
        let plan = Plan {
            messages: 5,
            room_mode: false,
            subscribers: 2,
        };
        assert_eq!(
            (plan.expected(0), plan.expected(1), plan.expected(7)),
            (3, 2, 0)
        );
        let mut t = Tracker::new(plan, 0..2);
        for seq in [0, 2, 4] {
            t.deliver(0, &stamp(seq, 1, 12), 2_000);
        }
        t.deliver(1, &stamp(1, 1, 12), 2_000);
        t.deliver(1, &stamp(2, 1, 12), 2_000); // subscriber 0's message
        assert_eq!(t.unexpected, 1);
        assert_eq!(t.lost(), 1);
        t.deliver(1, &stamp(3, 1, 12), 2_000);
        assert!(t.complete());
    }
}

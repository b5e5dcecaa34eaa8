//! Which Kafka offsets may be stored: a message's offset is stored only when it and every
//! earlier message of its partition have been handed to their comets, so a job that dies
//! resumes at the first message not yet handed over (at-least-once). goim's job marks each
//! offset before pushing, and loses what was in flight (goim issue #134).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Offsets {
    /// partition → offset → handed over yet
    pending: HashMap<i32, BTreeMap<i64, bool>>,
}

impl Offsets {
    pub fn received(&mut self, partition: i32, offset: i64) {
        self.pending
            .entry(partition)
            .or_default()
            .insert(offset, false);
    }

    /// Marks one message handed over; returns the highest offset of the partition whose
    /// every earlier message is handed over too, if that moved.
    pub fn done(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.pending.get_mut(&partition)?;
        *p.get_mut(&offset)? = true;
        let mut last = None;
        while let Some(entry) = p.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        last
    }

    /// Messages received and not yet handed over.
    pub fn in_flight(&self) -> usize {
        self.pending
            .values()
            .map(|p| p.values().filter(|d| !**d).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_released_only_after_every_earlier_one() {
        let mut o = Offsets::default();
        for off in 10..14 {
            o.received(0, off);
        }
        o.received(1, 5);
        // 11 and 12 finish before 10: nothing may be stored yet.
        assert_eq!(o.done(0, 11), None);
        assert_eq!(o.done(0, 12), None);
        assert_eq!(o.in_flight(), 3);
        // 10 finishes: 10..=12 are all handed over.
        assert_eq!(o.done(0, 10), Some(12));
        // Another partition moves on its own.
        assert_eq!(o.done(1, 5), Some(5));
        assert_eq!(o.done(0, 13), Some(13));
        assert_eq!(o.in_flight(), 0);
        // Unknown partitions and offsets are ignored.
        assert_eq!(o.done(7, 1), None);
        assert_eq!(o.done(0, 99), None);
    }
}

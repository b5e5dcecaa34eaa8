//! A hashed timing wheel for handshake and heartbeat deadlines: O(1) insert, no timer per
//! connection on a heap. Time is a tick count passed in by the caller, so tests drive it.
//!
//! Deadlines move lazily: a heartbeat only stores the connection's new deadline; when the
//! wheel entry fires, the owner checks the real deadline and re-inserts if it moved later.
//! That keeps the hot path (a heartbeat) free of any wheel operation.

/// A wheel of `slots` buckets, one tick each. An entry due more than one turn ahead stays in
/// its slot and is skipped until its turn comes.
#[derive(Debug)]
pub struct Wheel<T> {
    slots: Vec<Vec<(u64, T)>>,
    /// The last tick advanced to; every entry due at or before it has been returned.
    now: u64,
    len: usize,
}

impl<T> Wheel<T> {
    pub fn new(slots: usize, now: u64) -> Self {
        assert!(slots > 0);
        Wheel {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            now,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` for tick `due`. A due tick already past fires at the next advance.
    pub fn insert(&mut self, due: u64, item: T) {
        let due = due.max(self.now + 1);
        let n = self.slots.len() as u64;
        self.slots[(due % n) as usize].push((due, item));
        self.len += 1;
    }

    /// Moves time to `now` and appends every entry due at or before it to `out`, as
    /// `(due, item)`.
    pub fn advance(&mut self, now: u64, out: &mut Vec<(u64, T)>) {
        if now <= self.now {
            return;
        }
        let n = self.slots.len() as u64;
        // Beyond one full turn every slot is visited once.
        let steps = (now - self.now).min(n);
        for step in 1..=steps {
            let slot = &mut self.slots[((self.now + step) % n) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now {
                    out.push(slot.swap_remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.now = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        let mut items: Vec<u32> = out.into_iter().map(|(_, i)| i).collect();
        items.sort();
        items
    }

    #[test]
    fn fires_at_the_due_tick_not_before() {
        let mut w = Wheel::new(8, 0);
        w.insert(3, 1);
        w.insert(5, 2);
        assert_eq!(fired(&mut w, 2), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 3), vec![1]);
        assert_eq!(fired(&mut w, 4), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 5), vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn entries_more_than_a_turn_ahead_wait_for_their_turn() {
        let mut w = Wheel::new(8, 0);
        w.insert(3, 1);
        w.insert(11, 2); // same slot, one turn later
        w.insert(27, 3); // three turns later
        assert_eq!(fired(&mut w, 3), vec![1]);
        assert_eq!(fired(&mut w, 10), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 11), vec![2]);
        assert_eq!(fired(&mut w, 26), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 27), vec![3]);
    }

    #[test]
    fn a_long_jump_fires_everything_due() {
        let mut w = Wheel::new(8, 100);
        for i in 0..50u32 {
            w.insert(101 + u64::from(i) * 3, i);
        }
        assert_eq!(fired(&mut w, 1000).len(), 50);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_due_fires_on_the_next_advance() {
        let mut w = Wheel::new(8, 10);
        w.insert(2, 7);
        assert_eq!(fired(&mut w, 10), Vec::<u32>::new());
        assert_eq!(fired(&mut w, 11), vec![7]);
    }

    #[test]
    fn reports_the_due_tick() {
        let mut w = Wheel::new(4, 0);
        w.insert(6, 'a');
        let mut out = Vec::new();
        w.advance(9, &mut out);
        assert_eq!(out, vec![(6, 'a')]);
    }
}

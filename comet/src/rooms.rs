//! A worker's rooms: room id (goim's `type://id`) → the members on this worker.
//!
//! Each member knows its index (slot) in its room's list, kept in its session, so leaving is
//! O(1): the last member moves into the freed slot and the caller updates that member's slot.
//! A room with no members is forgotten. Room ids are shared `Arc<str>`s: every session in a
//! room holds the same one.

use crate::bucket::ConnId;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Rooms {
    by_id: HashMap<Arc<str>, Vec<ConnId>>,
}

/// Where a member now sits: its room's shared id and its slot in the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seat {
    pub room: Arc<str>,
    pub slot: u32,
}

impl Rooms {
    /// Adds `id` to `room` (which must not be empty).
    pub fn join(&mut self, room: &str, id: ConnId) -> Seat {
        let room: Arc<str> = match self.by_id.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        };
        let members = self.by_id.entry(room.clone()).or_default();
        members.push(id);
        Seat {
            room,
            slot: (members.len() - 1) as u32,
        }
    }

    /// Removes the member at `slot` of `room`. Returns the member moved into that slot, whose
    /// seat's slot is now `slot`, if any.
    pub fn leave(&mut self, room: &str, slot: u32) -> Option<ConnId> {
        let members = self.by_id.get_mut(room)?;
        let slot = slot as usize;
        if slot >= members.len() {
            return None;
        }
        members.swap_remove(slot);
        let moved = members.get(slot).copied();
        if members.is_empty() {
            self.by_id.remove(room);
        }
        moved
    }

    pub fn members(&self, room: &str) -> Option<&[ConnId]> {
        self.by_id.get(room).map(Vec::as_slice)
    }

    /// Members of `room` on this worker.
    pub fn count(&self, room: &str) -> i32 {
        self.by_id.get(room).map_or(0, |m| m.len() as i32)
    }

    /// Every room with its member count.
    pub fn counts(&self) -> Vec<(Arc<str>, i32)> {
        self.by_id
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as i32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ConnId {
        ConnId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn leaving_moves_the_last_member_into_the_slot() {
        let mut r = Rooms::default();
        let seats: Vec<Seat> = (0..3).map(|i| r.join("live://1", id(i))).collect();
        assert_eq!(seats[2].slot, 2);
        assert!(Arc::ptr_eq(&seats[0].room, &seats[2].room), "one shared id");
        // 0 leaves: 2 takes slot 0.
        assert_eq!(r.leave("live://1", 0), Some(id(2)));
        assert_eq!(r.members("live://1"), Some(&[id(2), id(1)][..]));
        // The last member leaves: nobody moves.
        assert_eq!(r.leave("live://1", 1), None);
        assert_eq!(r.count("live://1"), 1);
        assert_eq!(r.leave("live://1", 0), None);
        assert_eq!(r.members("live://1"), None, "an empty room is forgotten");
        assert_eq!(r.leave("live://1", 0), None);
        assert_eq!(r.leave("live://9", 5), None);
        assert!(r.counts().is_empty());
    }
}

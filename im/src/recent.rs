//! Recent acks: the answers to client sends (op 20) acknowledged lately, by
//! `(conversation, sender, client_msg_id)`, so that a retry of a send that was already stored
//! *and* handed to delivery is answered from memory: no store transaction, no second
//! delivery.
//!
//! Why: a send whose ack comes after comet's deadline is answered 504 (outcome unknown,
//! reference im.md §5.4), and the client resends the same id. Without this, every such retry
//! costs what the send cost (a store transaction that finds the id in the dedup index, then
//! a re-publish to every recipient), so under overload the retries of messages already
//! stored keep the deployment overloaded: in the soak (bench/RESULTS.md, "Soak", run r5)
//! 18,751 of 22,567 acknowledged sends were answered as duplicates.
//!
//! Only sends answered code 0 are kept: one stored but not handed to delivery (503
//! `stored=true`) goes to the store again, whose duplicate answer re-publishes it (§7.2).
//! The cache is per logic process and bounded (`im.recent_acks` entries, least recently
//! used out first); a retry it does not hold goes to the store's dedup index as before, so
//! what it answers is what the store would answer: the original's seq as a duplicate, or 409
//! when the id came with other content.

use crate::store::{Appended, Conv, StoreError};
use quick_cache::sync::Cache;

/// The answer to an id acknowledged before with other content: the store's own (409).
pub fn conflict() -> StoreError {
    StoreError::Conflict("client_msg_id already used for another message".into())
}

/// A send's dedup key: the store's (`conv_id`, `sender`, `client_msg_id`), with the
/// conversation as its canonical key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    conv: Conv,
    sender: i64,
    client_msg_id: String,
}

/// [`Key`] borrowed, for lookups without copying the id (hashes as [`Key`] does: the same
/// fields in the same order, a `&str` hashing as its `String`).
#[derive(Hash)]
struct KeyRef<'a> {
    conv: Conv,
    sender: i64,
    client_msg_id: &'a str,
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.conv == k.conv && self.sender == k.sender && self.client_msg_id == k.client_msg_id
    }
}

#[derive(Debug, Clone)]
struct Entry {
    content_hash: u64,
    /// The original's ack: content and mentions dropped (an ack names only seq, msg_id and
    /// server_ts).
    appended: Appended,
}

/// What the cache says of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recent {
    /// Acknowledged before with the same content: the original, `duplicate = true`.
    Acked(Appended),
    /// Acknowledged before with other content under this id (the store's `Conflict`).
    Conflict,
}

/// The bounded map of recent acks (see the module's doc). Shared by every request of one
/// logic process.
pub struct RecentAcks {
    cache: Cache<Key, Entry>,
}

impl RecentAcks {
    /// A cache of at most `capacity` acks; `None` when `capacity` is 0 (off).
    pub fn new(capacity: usize) -> Option<RecentAcks> {
        (capacity > 0).then(|| RecentAcks {
            cache: Cache::new(capacity),
        })
    }

    /// The answer to `sender`'s send of `client_msg_id` in `conv` with `content_hash`, when
    /// an ack of that id is held; `None` otherwise (or for an empty id: not deduplicated).
    pub fn get(
        &self,
        conv: Conv,
        sender: i64,
        client_msg_id: &str,
        content_hash: u64,
    ) -> Option<Recent> {
        if client_msg_id.is_empty() {
            return None;
        }
        let e = self.cache.get(&KeyRef {
            conv,
            sender,
            client_msg_id,
        })?;
        if e.content_hash != content_hash {
            return Some(Recent::Conflict);
        }
        let mut appended = e.appended;
        appended.duplicate = true;
        Some(Recent::Acked(appended))
    }

    /// Keeps the ack of a send stored and handed to delivery (code 0).
    pub fn insert(
        &self,
        conv: Conv,
        sender: i64,
        client_msg_id: &str,
        content_hash: u64,
        a: &Appended,
    ) {
        if client_msg_id.is_empty() {
            return;
        }
        let mut appended = a.clone();
        appended.message.content = String::new();
        appended.message.mentions = Vec::new();
        let key = Key {
            conv,
            sender,
            client_msg_id: client_msg_id.to_string(),
        };
        self.cache.insert(
            key,
            Entry {
                content_hash,
                appended,
            },
        );
    }

    /// Acks held now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::im::v1::ConvKind;

    fn appended(seq: u64) -> Appended {
        let message = crate::store::StoredMessage {
            seq,
            msg_id: 100 + seq,
            server_ts: 1_000,
            sender: 1,
            content: "hello".into(),
            mentions: vec![3],
            ..Default::default()
        };
        Appended {
            conv_id: 7,
            message,
            duplicate: false,
            member_version: 0,
        }
    }

    const CONV: Conv = Conv {
        kind: ConvKind::P2p,
        a: 1,
        b: 2,
    };

    #[test]
    fn a_held_ack_answers_the_same_content_as_a_duplicate_and_other_content_as_a_conflict() {
        let r = RecentAcks::new(16).unwrap();
        assert_eq!(r.get(CONV, 1, "m1", 9), None);
        r.insert(CONV, 1, "m1", 9, &appended(5));
        let Some(Recent::Acked(a)) = r.get(CONV, 1, "m1", 9) else {
            panic!("held");
        };
        assert!(a.duplicate);
        assert_eq!((a.conv_id, a.message.seq, a.message.msg_id), (7, 5, 105));
        assert!(a.message.content.is_empty() && a.message.mentions.is_empty());
        assert_eq!(r.get(CONV, 1, "m1", 10), Some(Recent::Conflict));
        // Another sender, conversation or id is another send.
        assert_eq!(r.get(CONV, 2, "m1", 9), None);
        let other = Conv { b: 3, ..CONV };
        assert_eq!(r.get(other, 1, "m1", 9), None);
        assert_eq!(r.get(CONV, 1, "m2", 9), None);
    }

    #[test]
    fn an_empty_id_is_never_held_and_capacity_0_is_off() {
        let r = RecentAcks::new(16).unwrap();
        r.insert(CONV, 1, "", 9, &appended(5));
        assert_eq!(r.get(CONV, 1, "", 9), None);
        assert!(r.is_empty());
        assert!(RecentAcks::new(0).is_none());
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let r = RecentAcks::new(100).unwrap();
        for i in 0..1_000u64 {
            r.insert(CONV, 1, &format!("m{i}"), i, &appended(i + 1));
        }
        assert!(r.len() <= 100, "{} held", r.len());
        assert!(!r.is_empty());
    }
}

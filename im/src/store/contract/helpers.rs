//! The harness every contract test gets, and the builders shared by the rule tests.

use crate::store::*;
use starling_proto::im::v1::MsgKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A fresh, empty store and the clock it writes with, which the test moves.
pub(crate) struct H {
    pub store: Arc<dyn ImStore>,
    pub clock: Arc<AtomicI64>,
    /// What must live as long as the store (a temporary directory).
    pub _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl H {
    pub fn set_now(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }
}

/// The clock every test starts at.
pub(crate) const T0: i64 = 1_700_000_000_000;

/// A clock starting at [`T0`] and a store clock that reads it.
pub(crate) fn test_clock() -> (Arc<AtomicI64>, embedded::Clock) {
    let clock = Arc::new(AtomicI64::new(T0));
    let c = clock.clone();
    (clock, Arc::new(move || c.load(Ordering::SeqCst)))
}

/// A NORMAL text message whose hash is its text's.
pub(crate) fn text(conv: Conv, sender: i64, cmid: &str, text: &str) -> AppendReq {
    AppendReq {
        conv,
        sender,
        client_msg_id: cmid.into(),
        content_hash: hash(text),
        kind: MsgKind::Normal,
        content_type: 1,
        content: text.into(),
        ..Default::default()
    }
}

pub(crate) fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub(crate) async fn group(t: &H, gid: i64, owner: i64, members: &[i64]) -> GroupChange {
    t.store
        .create_group(CreateGroupReq {
            gid,
            name: "g".into(),
            owner,
            members: members.to_vec(),
            content: "created".into(),
            max_members: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

pub(crate) fn change(gid: i64, uids: &[i64], history: History) -> MembersChangeReq {
    MembersChangeReq {
        gid,
        uids: uids.to_vec(),
        history,
        by: 1,
        content: "change".into(),
        max_members: 5,
        ..Default::default()
    }
}

pub(crate) fn recall(c: Conv, seq: u64, by: i64, cmid: &str) -> RecallReq {
    RecallReq {
        conv: c,
        seq,
        by,
        client_msg_id: cmid.into(),
        window_ms: 120_000,
        wipe: true,
        ..Default::default()
    }
}

//! Builders shared by the rule tests.

use super::T;
use crate::store::*;

pub(super) fn open() -> T {
    T::open(Durability::Buffer)
}

pub(super) async fn group(t: &T, gid: i64, owner: i64, members: &[i64]) -> GroupChange {
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

pub(super) fn change(gid: i64, uids: &[i64], history: History) -> MembersChangeReq {
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

pub(super) fn recall(c: Conv, seq: u64, by: i64, cmid: &str) -> RecallReq {
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

//! One test per contract rule of `ImStore` (the doc comments in `store/mod.rs`).

use super::{T, T0, text};
use crate::store::*;
use starling_proto::im::v1::{ConvKind, MsgKind};

fn open() -> T {
    T::open(Durability::Buffer)
}

async fn group(t: &T, gid: i64, owner: i64, members: &[i64]) -> GroupChange {
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

fn change(gid: i64, uids: &[i64], history: History) -> MembersChangeReq {
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

#[tokio::test]
async fn p2p_is_created_by_its_first_message_with_both_memberships() {
    let t = open();
    let c = Conv::p2p(2, 1);
    assert_eq!(t.store.conversation(c).await.unwrap(), None);
    let a = t.store.append(text(c, 2, "x", "hi")).await.unwrap();
    assert_eq!(
        (
            a.message.seq,
            a.duplicate,
            a.message.server_ts,
            a.message.conv
        ),
        (1, false, T0, None)
    );
    let head = t.store.conversation(c).await.unwrap().unwrap();
    assert_eq!(
        (head.conv_id, head.last_seq, head.last_msg_ts, head.min_seq),
        (a.conv_id, 1, T0, 1)
    );
    for uid in [1, 2] {
        let m = t.store.member(c, uid).await.unwrap().unwrap();
        assert_eq!((m.join_seq, m.leave_seq, m.role), (1, 0, ROLE_MEMBER));
    }
    // The sender's read_seq rose with its own message; the peer's did not.
    assert_eq!(t.store.member(c, 2).await.unwrap().unwrap().read_seq, 1);
    assert_eq!(t.store.member(c, 1).await.unwrap().unwrap().read_seq, 0);
    assert!(matches!(
        t.store.append(text(Conv::p2p(3, 3), 3, "x", "")).await,
        Err(StoreError::BadRequest(_))
    ));
    assert!(matches!(
        t.store.append(text(c, 9, "x", "")).await,
        Err(StoreError::Forbidden(_))
    ));
    let bad_kind = AppendReq {
        kind: MsgKind::Recall,
        ..text(c, 1, "r", "")
    };
    assert!(matches!(
        t.store.append(bad_kind).await,
        Err(StoreError::BadRequest(_))
    ));
}

#[tokio::test]
async fn group_appends_need_a_current_member_unless_system_or_admin() {
    let t = open();
    let g = group(&t, 10, 1, &[2]).await;
    assert_eq!(g.message.seq, 1);
    let c = Conv::group(10);
    assert_eq!(
        t.store
            .append(text(c, 2, "a", "x"))
            .await
            .unwrap()
            .message
            .seq,
        2
    );
    assert!(matches!(
        t.store.append(text(c, 3, "a", "x")).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        t.store.append(text(Conv::group(11), 1, "a", "x")).await,
        Err(StoreError::NotFound(_))
    ));
    let sys = AppendReq {
        kind: MsgKind::System,
        ..text(c, 0, "", "notice")
    };
    assert_eq!(
        t.store.append(sys).await.unwrap().message.kind,
        MsgKind::System as i32
    );
    let admin = AppendReq {
        as_admin: true,
        ..text(c, 3, "b", "x")
    };
    assert_eq!(t.store.append(admin).await.unwrap().message.seq, 4);
    t.store
        .remove_members(change(10, &[2], History::FromJoin))
        .await
        .unwrap();
    assert!(matches!(
        t.store.append(text(c, 2, "c", "x")).await,
        Err(StoreError::Forbidden(_))
    ));
    t.store.dissolve_group(10, "bye".into()).await.unwrap();
    assert!(matches!(
        t.store.append(text(c, 1, "d", "x")).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn notice_is_for_the_system_and_creates_the_owners_membership() {
    let t = open();
    let c = Conv::notice(5);
    assert!(matches!(
        t.store.append(text(c, 5, "a", "x")).await,
        Err(StoreError::Forbidden(_))
    ));
    let a = t
        .store
        .append(AppendReq {
            kind: MsgKind::System,
            ..text(c, 0, "", "welcome")
        })
        .await
        .unwrap();
    assert_eq!(a.message.seq, 1);
    let m = t.store.member(c, 5).await.unwrap().unwrap();
    assert_eq!((m.join_seq, m.leave_seq, m.read_seq), (1, 0, 0));
    assert_eq!(
        t.store
            .append(AppendReq {
                as_admin: true,
                ..text(c, 7, "b", "x")
            })
            .await
            .unwrap()
            .message
            .seq,
        2
    );
}

#[tokio::test]
async fn dedup_returns_the_original_or_conflicts() {
    let t = open();
    let c = Conv::p2p(1, 2);
    let a = t.store.append(text(c, 1, "id", "hello")).await.unwrap();
    t.store.append(text(c, 2, "other", "x")).await.unwrap();
    t.set_now(T0 + 5);
    let d = t.store.append(text(c, 1, "id", "hello")).await.unwrap();
    assert!(d.duplicate);
    assert_eq!(
        (
            d.message.seq,
            d.message.msg_id,
            d.message.server_ts,
            d.message.content.as_str()
        ),
        (1, a.message.msg_id, T0, "hello")
    );
    assert!(matches!(
        t.store.append(text(c, 1, "id", "changed")).await,
        Err(StoreError::Conflict(_))
    ));
    // The same id from the other sender is another message.
    assert!(
        !t.store
            .append(text(c, 2, "id", "hello"))
            .await
            .unwrap()
            .duplicate
    );
    // An empty id is never deduplicated.
    let s1 = t.store.append(text(c, 1, "", "same")).await.unwrap();
    let s2 = t.store.append(text(c, 1, "", "same")).await.unwrap();
    assert_eq!(
        (s1.duplicate, s2.duplicate, s2.message.seq),
        (false, false, s1.message.seq + 1)
    );
    assert_eq!(t.store.conversation(c).await.unwrap().unwrap().last_seq, 5);
}

#[tokio::test]
async fn server_ts_never_goes_back_in_a_conversation() {
    let t = open();
    let c = Conv::p2p(1, 2);
    t.set_now(T0 + 1000);
    t.store.append(text(c, 1, "a", "x")).await.unwrap();
    t.set_now(T0);
    let b = t.store.append(text(c, 1, "b", "x")).await.unwrap();
    assert_eq!(b.message.server_ts, T0 + 1000);
}

fn recall(c: Conv, seq: u64, by: i64, cmid: &str) -> RecallReq {
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

#[tokio::test]
async fn recall_tombstones_and_appends_an_event_idempotently() {
    let t = open();
    let c = Conv::p2p(1, 2);
    t.store
        .append(AppendReq {
            mentions: vec![2],
            ..text(c, 1, "a", "secret")
        })
        .await
        .unwrap();
    let r = t.store.recall(recall(c, 1, 1, "r1")).await.unwrap();
    assert_eq!(
        (
            r.message.seq,
            r.message.kind,
            r.message.ref_seq,
            r.message.sender
        ),
        (2, MsgKind::Recall as i32, 1, 1)
    );
    let target = &t.store.range(c, 1, 1, 1).await.unwrap()[0];
    assert!(target.recalled && target.content.is_empty() && target.mentions.is_empty());
    let again = t.store.recall(recall(c, 1, 1, "r1")).await.unwrap();
    assert_eq!((again.duplicate, again.message.seq), (true, 2));
    assert!(matches!(
        t.store.recall(recall(c, 1, 1, "r2")).await,
        Err(StoreError::Conflict(_))
    ));
    // The same recall id naming another seq is a conflict too.
    assert!(matches!(
        t.store.recall(recall(c, 9, 1, "r1")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(
            t.store.recall(recall(c, 2, 1, "r3")).await,
            Err(StoreError::BadRequest(_))
        ),
        "a RECALL event"
    );
    assert!(matches!(
        t.store.recall(recall(c, 9, 1, "r4")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        t.store.recall(recall(c, 0, 1, "r5")).await,
        Err(StoreError::BadRequest(_))
    ));
    assert!(matches!(
        t.store.recall(recall(Conv::p2p(3, 4), 1, 3, "r")).await,
        Err(StoreError::NotFound(_))
    ));
    // Without wipe the content stays under the tombstone.
    t.store.append(text(c, 2, "b", "kept")).await.unwrap();
    t.store
        .recall(RecallReq {
            wipe: false,
            ..recall(c, 3, 2, "r6")
        })
        .await
        .unwrap();
    let kept = &t.store.range(c, 3, 3, 1).await.unwrap()[0];
    assert!(kept.recalled && kept.content == "kept");
}

#[tokio::test]
async fn recall_rights_and_window() {
    let t = open();
    let c = Conv::p2p(1, 2);
    t.store.append(text(c, 1, "a", "x")).await.unwrap();
    assert!(matches!(
        t.store.recall(recall(c, 1, 2, "r")).await,
        Err(StoreError::Forbidden(_))
    ));
    t.set_now(T0 + 120_001);
    assert!(matches!(
        t.store.recall(recall(c, 1, 1, "r")).await,
        Err(StoreError::Gone(_))
    ));
    // Exactly at the window's end it is still allowed; a window of 0 is none.
    t.set_now(T0 + 120_000);
    t.store.append(text(c, 1, "b", "y")).await.unwrap();
    t.set_now(T0 + 240_000);
    t.store.recall(recall(c, 2, 1, "r2")).await.unwrap();
    t.set_now(T0 + 10_000_000);
    t.store
        .recall(RecallReq {
            window_ms: 0,
            ..recall(c, 1, 1, "r3")
        })
        .await
        .unwrap();
    // The admin API has neither check.
    t.store.append(text(c, 2, "c", "z")).await.unwrap();
    t.set_now(T0 + 20_000_000);
    let by_admin = RecallReq {
        as_admin: true,
        ..recall(c, 5, 0, "")
    };
    assert_eq!(t.store.recall(by_admin).await.unwrap().message.sender, 0);
}

#[tokio::test]
async fn group_owner_and_admin_may_recall_anything_at_any_age() {
    let t = open();
    group(&t, 10, 1, &[2, 3, 4]).await;
    let c = Conv::group(10);
    for i in 0..3 {
        t.store
            .append(text(c, 4, &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    t.store
        .set_member(SetMemberReq {
            gid: 10,
            uid: 2,
            role: Some(ROLE_ADMIN),
            ..Default::default()
        })
        .await
        .unwrap();
    t.set_now(T0 + 10_000_000);
    assert!(
        matches!(
            t.store.recall(recall(c, 2, 3, "r")).await,
            Err(StoreError::Forbidden(_))
        ),
        "a plain member"
    );
    assert!(
        matches!(
            t.store.recall(recall(c, 2, 4, "r")).await,
            Err(StoreError::Gone(_))
        ),
        "the sender, late"
    );
    t.store.recall(recall(c, 2, 1, "r")).await.unwrap();
    t.store.recall(recall(c, 3, 2, "r")).await.unwrap();
    // A sender who left may not recall.
    t.set_now(T0);
    t.store
        .remove_members(change(10, &[4], History::FromJoin))
        .await
        .unwrap();
    assert!(matches!(
        t.store.recall(recall(c, 4, 4, "r")).await,
        Err(StoreError::Forbidden(_))
    ));
}

#[tokio::test]
async fn create_group_rules() {
    let t = open();
    let g = group(&t, 0, 1, &[2, 2, 1, 3]).await;
    assert!(g.gid > 0);
    assert_eq!(g.added, [1, 2, 3]);
    assert_eq!(
        (g.message.seq, g.message.kind, g.member_version),
        (1, MsgKind::System as i32, 1)
    );
    let info = t.store.group(g.gid).await.unwrap().unwrap();
    assert_eq!(
        (
            info.owner,
            info.member_count,
            info.dissolved,
            info.created_ts
        ),
        (1, 3, false, T0)
    );
    let owner = t
        .store
        .member(Conv::group(g.gid), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((owner.role, owner.join_seq), (ROLE_OWNER, 1));
    let again = CreateGroupReq {
        gid: g.gid,
        owner: 1,
        ..Default::default()
    };
    assert!(matches!(
        t.store.create_group(again).await,
        Err(StoreError::Conflict(_))
    ));
    let big = CreateGroupReq {
        gid: 50,
        owner: 1,
        members: vec![2, 3],
        max_members: 2,
        ..Default::default()
    };
    assert!(matches!(
        t.store.create_group(big).await,
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(t.store.group(50).await.unwrap(), None);
    // A store-assigned gid skips one a caller took.
    let taken = g.gid + 1;
    group(&t, taken, 1, &[]).await;
    assert!(group(&t, 0, 1, &[]).await.gid > taken);
}

#[tokio::test]
async fn add_and_remove_members_with_join_and_leave_seqs() {
    let t = open();
    group(&t, 10, 1, &[2]).await;
    let c = Conv::group(10);
    t.store.append(text(c, 2, "a", "x")).await.unwrap(); // seq 2
    let add = t
        .store
        .add_members(change(10, &[2, 3], History::FromJoin))
        .await
        .unwrap();
    assert_eq!(
        (add.message.seq, add.added.clone(), add.member_version),
        (3, vec![3], 2)
    );
    assert_eq!(t.store.member(c, 3).await.unwrap().unwrap().join_seq, 3);
    let all = t
        .store
        .add_members(change(10, &[4], History::All))
        .await
        .unwrap();
    assert_eq!((all.message.seq, all.member_version), (4, 3));
    let m4 = t.store.member(c, 4).await.unwrap().unwrap();
    assert_eq!((m4.join_seq, m4.updated_ts), (1, T0));
    assert!(matches!(
        t.store.add_members(change(10, &[5, 6], History::All)).await,
        Err(StoreError::TooLarge(_))
    ));
    assert!(matches!(
        t.store.remove_members(change(10, &[1], History::All)).await,
        Err(StoreError::Forbidden(_))
    ));
    let rm = t
        .store
        .remove_members(change(10, &[3, 99], History::All))
        .await
        .unwrap();
    assert_eq!(
        (rm.message.seq, rm.removed.clone(), rm.member_version),
        (5, vec![3], 4)
    );
    let m3 = t.store.member(c, 3).await.unwrap().unwrap();
    assert_eq!(
        (m3.leave_seq, m3.is_current(), m3.ceiling(100)),
        (5, false, 5)
    );
    assert_eq!(t.store.group(10).await.unwrap().unwrap().member_count, 3);
    // Rejoining clears leave_seq and moves join_seq.
    t.store.mark(3, c, MarkKind::Read, 5).await.unwrap();
    let back = t
        .store
        .add_members(change(10, &[3], History::FromJoin))
        .await
        .unwrap();
    let m3 = t.store.member(c, 3).await.unwrap().unwrap();
    assert_eq!(
        (m3.join_seq, m3.leave_seq, m3.read_seq, back.added),
        (6, 0, 5, vec![3])
    );
    assert!(matches!(
        t.store.add_members(change(11, &[3], History::All)).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn update_set_member_and_dissolve() {
    let t = open();
    group(&t, 10, 1, &[2, 3]).await;
    let c = Conv::group(10);
    let up = UpdateGroupReq {
        gid: 10,
        name: Some("new".into()),
        muted: Some(true),
        content: "renamed".into(),
        ..Default::default()
    };
    let u = t.store.update_group(up).await.unwrap();
    assert_eq!((u.message.seq, u.member_version), (2, 1));
    let g = t.store.group(10).await.unwrap().unwrap();
    assert_eq!((g.name.as_str(), g.muted, g.ex.as_str()), ("new", true, ""));
    let sm = SetMemberReq {
        gid: 10,
        uid: 2,
        role: Some(ROLE_ADMIN),
        muted_until_ms: Some(T0 + 60_000),
    };
    t.store.set_member(sm).await.unwrap();
    let m2 = t.store.member(c, 2).await.unwrap().unwrap();
    assert_eq!((m2.role, m2.muted_until_ms), (ROLE_ADMIN, T0 + 60_000));
    let missing = SetMemberReq {
        gid: 10,
        uid: 9,
        ..Default::default()
    };
    assert!(matches!(
        t.store.set_member(missing).await,
        Err(StoreError::NotFound(_))
    ));
    let d = t.store.dissolve_group(10, "bye".into()).await.unwrap();
    assert_eq!((d.message.seq, d.removed.clone()), (3, vec![1, 2, 3]));
    assert!(t.store.group(10).await.unwrap().unwrap().dissolved);
    for uid in [1, 2, 3] {
        assert_eq!(t.store.member(c, uid).await.unwrap().unwrap().leave_seq, 3);
    }
    // The log stays readable; the group takes no more writes.
    assert_eq!(t.store.range(c, 1, 10, 10).await.unwrap().len(), 3);
    assert!(matches!(
        t.store.dissolve_group(10, "".into()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        t.store.add_members(change(10, &[4], History::All)).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn marks_are_monotonic_and_clamped() {
    let t = open();
    let c = Conv::p2p(1, 2);
    for i in 0..5 {
        t.store
            .append(text(c, 1, &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    let m = t.store.mark(2, c, MarkKind::Read, 3).await.unwrap();
    assert_eq!(
        m,
        Marked {
            seq: 3,
            moved: true
        }
    );
    assert_eq!(
        t.store.mark(2, c, MarkKind::Read, 2).await.unwrap(),
        Marked {
            seq: 3,
            moved: false
        }
    );
    assert_eq!(
        t.store.mark(2, c, MarkKind::Read, 99).await.unwrap(),
        Marked {
            seq: 5,
            moved: true
        }
    );
    assert_eq!(
        t.store.mark(2, c, MarkKind::Recv, 4).await.unwrap(),
        Marked {
            seq: 4,
            moved: true
        }
    );
    assert_eq!(
        t.store.mark(2, c, MarkKind::DeletedTo, 2).await.unwrap(),
        Marked {
            seq: 2,
            moved: true
        }
    );
    t.set_now(T0 + 7);
    t.store.mark(2, c, MarkKind::Recv, 5).await.unwrap();
    let st = t.store.member(c, 2).await.unwrap().unwrap();
    assert_eq!(
        (st.read_seq, st.recv_seq, st.deleted_to_seq, st.updated_ts),
        (5, 5, 2, T0 + 7)
    );
    assert_eq!(st.floor(1), 3);
    assert!(matches!(
        t.store.mark(3, c, MarkKind::Read, 1).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        t.store.mark(1, Conv::p2p(1, 9), MarkKind::Read, 1).await,
        Err(StoreError::NotFound(_))
    ));
    // A member who left marks up to its leave_seq only.
    group(&t, 10, 1, &[2]).await;
    let g = Conv::group(10);
    t.store
        .remove_members(change(10, &[2], History::All))
        .await
        .unwrap(); // seq 2
    t.store.append(text(g, 1, "later", "x")).await.unwrap(); // seq 3
    assert_eq!(
        t.store.mark(2, g, MarkKind::Read, 3).await.unwrap(),
        Marked {
            seq: 2,
            moved: true
        }
    );
}

#[tokio::test]
async fn unread_counts_others_normal_unrecalled_messages_up_to_the_cap() {
    let t = open();
    group(&t, 10, 1, &[2, 3]).await; // 1: SYSTEM
    let c = Conv::group(10);
    for i in 0..5 {
        t.store
            .append(text(c, 1, &format!("a{i}"), "x"))
            .await
            .unwrap(); // 2..=6
    }
    t.store.append(text(c, 2, "own", "x")).await.unwrap(); // 7: the viewer's own
    t.store.recall(recall(c, 6, 1, "r")).await.unwrap(); // 6 recalled, 8: RECALL
    t.store
        .add_members(change(10, &[4], History::All))
        .await
        .unwrap(); // 9: SYSTEM
    assert_eq!(t.store.unread(c, 2, 0, 9, 999).await.unwrap(), 4);
    assert_eq!(t.store.unread(c, 2, 0, 9, 3).await.unwrap(), 3);
    assert_eq!(t.store.unread(c, 2, 3, 9, 999).await.unwrap(), 2);
    assert_eq!(t.store.unread(c, 2, 0, 4, 999).await.unwrap(), 3);
    assert_eq!(t.store.unread(c, 1, 0, 9, 999).await.unwrap(), 1);
    assert_eq!(t.store.unread(c, 2, 9, 9, 999).await.unwrap(), 0);
    assert_eq!(
        t.store.unread(Conv::group(77), 2, 0, 9, 999).await.unwrap(),
        0
    );
    // A reply clears the replier's badge: read_seq follows its own send.
    assert_eq!(t.store.member(c, 2).await.unwrap().unwrap().read_seq, 7);
}

#[tokio::test]
async fn last_visible_skips_recall_events() {
    let t = open();
    let c = Conv::p2p(1, 2);
    assert_eq!(t.store.last_visible(c, 1, 10).await.unwrap(), None);
    t.store.append(text(c, 1, "a", "one")).await.unwrap();
    t.store.append(text(c, 1, "b", "two")).await.unwrap();
    t.store.recall(recall(c, 2, 1, "r")).await.unwrap(); // 3: RECALL
    let last = t.store.last_visible(c, 1, 3).await.unwrap().unwrap();
    assert_eq!(
        (last.seq, last.recalled),
        (2, true),
        "the tombstone, not the event"
    );
    assert_eq!(t.store.last_visible(c, 1, 1).await.unwrap().unwrap().seq, 1);
    assert_eq!(
        t.store.last_visible(c, 3, 3).await.unwrap(),
        None,
        "above the floor only the event"
    );
}

#[tokio::test]
async fn range_both_directions() {
    let t = open();
    let c = Conv::p2p(1, 2);
    for i in 0..10 {
        t.store
            .append(text(c, 1, &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(t.store.range(c, 3, 9, 4).await.unwrap()), [3, 4, 5, 6]);
    assert_eq!(
        seqs(t.store.range_back(c, 3, 9, 4).await.unwrap()),
        [9, 8, 7, 6]
    );
    assert_eq!(seqs(t.store.range_back(c, 0, 2, 10).await.unwrap()), [2, 1]);
    assert!(t.store.range(c, 5, 4, 10).await.unwrap().is_empty());
    assert!(
        t.store
            .range(Conv::p2p(1, 3), 1, 4, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn directory_filters_by_since_and_pages_by_conv_id() {
    let t = open();
    let c1 = t
        .store
        .append(text(Conv::p2p(1, 2), 2, "a", "x"))
        .await
        .unwrap()
        .conv_id;
    t.set_now(T0 + 100);
    let c2 = t
        .store
        .append(text(Conv::p2p(1, 3), 3, "a", "x"))
        .await
        .unwrap()
        .conv_id;
    let c3 = group(&t, 10, 4, &[1]).await.conv_id;
    t.store
        .append(text(Conv::p2p(5, 6), 5, "a", "x"))
        .await
        .unwrap();
    let ids =
        |v: &Vec<(ConvMeta, MemberState)>| v.iter().map(|(c, _)| c.conv_id).collect::<Vec<_>>();
    let all = t.store.directory(1, 0, 0, 10).await.unwrap();
    assert_eq!(ids(&all), [c1, c2, c3]);
    assert_eq!(all[2].0.conv, Conv::group(10));
    assert_eq!(all[2].1.uid, 1);
    assert_eq!(
        ids(&t.store.directory(1, T0 + 100, 0, 10).await.unwrap()),
        [c2, c3]
    );
    // Paging: after a conv id, at most `limit`.
    assert_eq!(ids(&t.store.directory(1, 0, 0, 2).await.unwrap()), [c1, c2]);
    assert_eq!(ids(&t.store.directory(1, 0, c2, 2).await.unwrap()), [c3]);
    // A membership change (a mark) brings an old conversation back; so does a message.
    t.set_now(T0 + 200);
    t.store
        .mark(1, Conv::p2p(1, 2), MarkKind::Read, 1)
        .await
        .unwrap();
    assert_eq!(
        ids(&t.store.directory(1, T0 + 200, 0, 10).await.unwrap()),
        [c1]
    );
    t.set_now(T0 + 300);
    t.store
        .append(text(Conv::group(10), 4, "b", "x"))
        .await
        .unwrap();
    assert_eq!(
        ids(&t.store.directory(1, T0 + 300, 0, 10).await.unwrap()),
        [c3]
    );
    // Past memberships stay listed.
    t.store
        .remove_members(MembersChangeReq {
            gid: 10,
            uids: vec![1],
            ..Default::default()
        })
        .await
        .unwrap();
    let d = t.store.directory(1, T0 + 300, 0, 10).await.unwrap();
    assert!(d[0].1.leave_seq > 0);
}

#[tokio::test]
async fn contacts_are_versioned_per_owner_including_deletes() {
    let t = open();
    let friend = |r: &str| {
        Some(ContactState {
            kind: ContactKind::Friend,
            remark: r.into(),
        })
    };
    assert_eq!(t.store.put_contact(1, 2, friend("two")).await.unwrap(), 1);
    assert_eq!(t.store.put_contact(1, 3, friend("three")).await.unwrap(), 2);
    assert_eq!(
        t.store.put_contact(9, 3, friend("")).await.unwrap(),
        1,
        "per owner"
    );
    let blocked = Some(ContactState {
        kind: ContactKind::Blocked,
        remark: String::new(),
    });
    assert_eq!(t.store.put_contact(1, 2, blocked.clone()).await.unwrap(), 3);
    assert_eq!(t.store.put_contact(1, 3, None).await.unwrap(), 4);
    let all = t.store.contacts(1, 0, 10).await.unwrap();
    let v: Vec<_> = all
        .iter()
        .map(|c| (c.peer, c.version, c.state.clone()))
        .collect();
    assert_eq!(
        v,
        [(2, 3, blocked.clone()), (3, 4, None)],
        "each peer once, ascending by version"
    );
    assert_eq!(t.store.contacts(1, 3, 10).await.unwrap().len(), 1);
    assert_eq!(t.store.contacts(1, 0, 1).await.unwrap()[0].peer, 2);
    assert_eq!(t.store.contact(1, 2).await.unwrap().unwrap().state, blocked);
    assert_eq!(t.store.contact(1, 3).await.unwrap().unwrap().state, None);
    assert_eq!(t.store.contact(2, 1).await.unwrap(), None);
}

#[tokio::test]
async fn users_upsert_and_revocation_never_moves_back() {
    let t = open();
    assert_eq!(t.store.user(1).await.unwrap(), None);
    let u = User {
        uid: 1,
        name: "a".into(),
        avatar: "p".into(),
        ex: "{}".into(),
        disabled: true,
        valid_after_ms: 50,
    };
    t.store.put_user(u.clone()).await.unwrap();
    assert_eq!(t.store.user(1).await.unwrap().unwrap(), u);
    t.store
        .put_user(User {
            uid: 1,
            name: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = t.store.user(1).await.unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.disabled, got.valid_after_ms),
        ("b", false, 50)
    );
}

#[tokio::test]
async fn members_page_by_uid() {
    let t = open();
    group(&t, 10, 5, &[1, 2, 3, 4]).await;
    let c = Conv::group(10);
    t.store
        .remove_members(change(10, &[2], History::All))
        .await
        .unwrap();
    let uids = |v: Vec<MemberState>| v.iter().map(|m| m.uid).collect::<Vec<_>>();
    assert_eq!(
        uids(t.store.members(c, 0, 10, false).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        uids(t.store.members(c, 0, 10, true).await.unwrap()),
        [1, 3, 4, 5]
    );
    assert_eq!(uids(t.store.members(c, 0, 2, true).await.unwrap()), [1, 3]);
    assert_eq!(uids(t.store.members(c, 3, 2, true).await.unwrap()), [4, 5]);
    assert!(
        t.store
            .members(Conv::group(11), 0, 10, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.store.conversation(c).await.unwrap().unwrap().conv.kind,
        ConvKind::Group
    );
}

//! The contract's rules for messages: append (P2P, GROUP, NOTICE), dedup, server_ts, recall,
//! unread, last_visible and ranges (the doc comments in `store/mod.rs`).

use super::*;
use crate::store::*;
use starling_proto::im::v1::MsgKind;

pub(crate) async fn p2p_is_created_by_its_first_message_with_both_memberships(t: H) {
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

pub(crate) async fn group_appends_need_a_current_member_unless_system_or_admin(t: H) {
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

pub(crate) async fn notice_is_for_the_system_and_creates_the_owners_membership(t: H) {
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

pub(crate) async fn dedup_returns_the_original_or_conflicts(t: H) {
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

pub(crate) async fn server_ts_never_goes_back_in_a_conversation(t: H) {
    let c = Conv::p2p(1, 2);
    t.set_now(T0 + 1000);
    t.store.append(text(c, 1, "a", "x")).await.unwrap();
    t.set_now(T0);
    let b = t.store.append(text(c, 1, "b", "x")).await.unwrap();
    assert_eq!(b.message.server_ts, T0 + 1000);
}

pub(crate) async fn recall_tombstones_and_appends_an_event_idempotently(t: H) {
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

pub(crate) async fn recall_rights_and_window(t: H) {
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

pub(crate) async fn group_owner_and_admin_may_recall_anything_at_any_age(t: H) {
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

pub(crate) async fn unread_counts_others_normal_unrecalled_messages_up_to_the_cap(t: H) {
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

pub(crate) async fn last_visible_skips_recall_events(t: H) {
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

pub(crate) async fn range_both_directions(t: H) {
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

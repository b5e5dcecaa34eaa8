//! The contract's rules for groups, members, marks, the directory, contacts and users (the doc
//! comments in `store/mod.rs`).

use super::*;
use crate::store::*;
use starling_proto::im::v1::{ConvKind, MsgKind};

pub(crate) async fn create_group_rules(t: H) {
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

pub(crate) async fn add_and_remove_members_with_join_and_leave_seqs(t: H) {
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

pub(crate) async fn update_set_member_and_dissolve(t: H) {
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

pub(crate) async fn marks_are_monotonic_and_clamped(t: H) {
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

pub(crate) async fn directory_filters_by_since_and_pages_by_conv_id(t: H) {
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

pub(crate) async fn contacts_are_versioned_per_owner_including_deletes(t: H) {
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

pub(crate) async fn users_upsert_and_revocation_never_moves_back(t: H) {
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

pub(crate) async fn members_page_by_uid(t: H) {
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

//! IM acceptance scenarios with groups and the management API on the all-in-one (reference
//! im.md §9): T6 (offline sync over a P2P conversation and 50 groups), T8 (history with join
//! floors), T9 (recall), T11 (admin kick), T13 (group size).

mod common;

use common::im_client::{ImClient, group, p2p};
use common::im_server::*;
use starling_proto::im::v1::{
    PullReply, PullReq, SendAck, SyncReply, SyncReq, pull_req::Direction,
};
use starling_proto::op::{self, Codec};
use std::time::Duration;

/// T6: B offline while 1,000 messages arrive in one P2P conversation and 20 in each of 50
/// groups; B's directory lists 51 conversations with their unread (999 capped, 20 each), the
/// P2P pull takes 10 pages of 100, and B ends with all 2,000, once each, ascending.
#[test]
fn t6_offline_sync_in_pages() {
    let im = Im::start_with(|c| c.im.durability = starling_im::config::DurabilitySetting::Buffer);
    for g in 0..50 {
        let body = format!(
            r#"{{"gid":"{}","name":"g","owner":"20","members":["21"],"history":"all"}}"#,
            1000 + g
        );
        admin_ok(&im, "POST", "/im/v1/groups", &body);
    }
    let mut a = im.client(20, "a", Codec::Protobuf);
    for i in 0..1000 {
        assert_eq!(a.send(p2p(21), &format!("o-{i}"), "x")[0].code, 0);
    }
    for g in 0..50 {
        for i in 0..20 {
            assert_eq!(
                a.send(group(1000 + g), &format!("g{g}-{i}"), "x")[0].code,
                0
            );
        }
    }
    // B connects with nothing cached; the reference client syncs (pages of 100) and pulls.
    let mut b = ImClient::connect(im.login(21, "b", "test", Codec::Protobuf)).unwrap();
    assert_eq!(b.seqs(p2p(20)), (1..=1000).collect::<Vec<_>>());
    for g in 0..50 {
        // Seq 1 is the group's creation notice, then the 20 messages.
        assert_eq!(
            b.seqs(group(1000 + g)),
            (1..=21).collect::<Vec<_>>(),
            "group {g}"
        );
    }
    assert_eq!(b.raw_duplicates, 0);
    // The directory as a fresh device sees it, in pages of 20.
    let mut convs = Vec::new();
    let mut cursor = String::new();
    loop {
        let req = SyncReq {
            limit: 20,
            cursor: cursor.clone(),
            ..Default::default()
        };
        let page: SyncReply = b.call(op::im::SYNC, &req).unwrap();
        convs.extend(page.convs);
        if !page.has_more {
            break;
        }
        cursor = page.cursor;
    }
    assert_eq!(convs.len(), 51);
    let p = convs.iter().find(|h| h.conv == Some(p2p(20))).unwrap();
    assert_eq!((p.last_seq, p.unread, p.read_seq), (1000, 999, 0));
    assert_eq!(p.last.as_ref().unwrap().seq, 1000);
    for h in convs.iter().filter(|h| h.conv != Some(p2p(20))) {
        assert_eq!((h.last_seq, h.unread), (21, 20), "{h:?}");
    }
    // The P2P conversation from nothing: 10 pages of 100, has_more on the first 9.
    b.clear_cache();
    let pages = b.pull_forward(p2p(20), 100).unwrap();
    assert_eq!(pages.len(), 10);
    assert!(pages[..9].iter().all(|p| p.has_more) && !pages[9].has_more);
    assert_eq!(b.seqs(p2p(20)), (1..=1000).collect::<Vec<_>>());
}

/// T8: a group log of 10,000 messages; M joined at 5,001 (`from_join`) pages back 100 pages
/// of 50 down to its floor; a member with the whole history pages 200 down to seq 1.
#[test]
fn t8_history_paging_with_join_floors() {
    let im = Im::start_with(|c| c.im.durability = starling_im::config::DurabilitySetting::Buffer);
    admin_ok(
        &im,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"100","name":"history","owner":"1","members":["2","3","4","5"],"history":"all"}"#,
    );
    // seq 1 is the creation message: 4,999 messages make 5,000.
    fill(&im, &[1], group(100), 4999, "a");
    admin_ok(
        &im,
        "POST",
        "/im/v1/groups/100/members",
        r#"{"uids":["9"],"history":"from_join"}"#,
    );
    fill(&im, &[1, 2, 3, 4, 5], group(100), 4995, "b");
    fill(&im, &[1, 2, 3, 4], group(100), 4, "c");
    let mut m = im.client(9, "m", Codec::Protobuf);
    let (pages, seqs) = history(&mut m, group(100), 50);
    assert_eq!(pages.len(), 100);
    assert_eq!(
        seqs,
        (5001..=10000).rev().collect::<Vec<_>>(),
        "strictly descending, contiguous"
    );
    let last = pages.last().unwrap();
    assert!(!last.has_more);
    assert_eq!((last.floor_seq, last.next_seq), (5001, 0));
    let mut all = im.client(2, "all", Codec::Json);
    let (pages, seqs) = history(&mut all, group(100), 50);
    assert_eq!(pages.len(), 200);
    assert_eq!(seqs, (1..=10000).rev().collect::<Vec<_>>());
    // A forward pull from below M's floor starts at the floor.
    let r: PullReply = m
        .call(
            op::im::PULL,
            &PullReq {
                conv: Some(group(100)),
                dir: Direction::Forward as i32,
                from_seq: 1,
                limit: 5,
            },
        )
        .unwrap();
    assert_eq!((r.floor_seq, r.messages[0].seq), (5001, 5001));
}

/// T9: recall in a 10-member group: online members get the RECALL event; an offline member's
/// sync sees the tombstone and the event; second recall 409, others' message 403, after the
/// window 410; unread counts neither.
#[test]
fn t9_recall() {
    let im = Im::start_with(|c| c.im.recall_window = Duration::from_millis(1500));
    admin_ok(
        &im,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"200","name":"recall","owner":"1","members":["2","3","4","5","6","7","8","9","10"],"history":"all"}"#,
    );
    let g = group(200);
    let mut a = im.client(2, "a", Codec::Protobuf);
    let mut online: Vec<ImClient> = (3..=9)
        .map(|mid| {
            im.client(
                mid,
                &format!("o{mid}"),
                if mid % 2 == 0 {
                    Codec::Json
                } else {
                    Codec::Protobuf
                },
            )
        })
        .collect();
    let s = a.send(g, "to-recall", "secret")[0].seq;
    let other = a.send(g, "stays", "kept")[0].seq;
    let recall = starling_proto::im::v1::RecallReq {
        conv: Some(g),
        seq: s,
        client_msg_id: "r1".into(),
    };
    let ack: SendAck = a.call(op::im::RECALL, &recall).unwrap();
    assert_eq!(ack.code, 0, "{ack:?}");
    let event_seq = ack.seq;
    assert_eq!(event_seq, other + 1, "the recall event takes the next seq");
    // The same recall retried: the original event.
    let again: SendAck = a.call(op::im::RECALL, &recall).unwrap();
    assert_eq!(
        (again.code, again.seq, again.duplicate),
        (0, event_seq, true)
    );
    // Another id for the same message: already recalled.
    let twice: SendAck = a
        .call(
            op::im::RECALL,
            &starling_proto::im::v1::RecallReq {
                client_msg_id: "r2".into(),
                ..recall.clone()
            },
        )
        .unwrap();
    assert_eq!(twice.code, 409);
    // Someone else's message, without rights: 403.
    let mut b = im.client(3, "b", Codec::Protobuf);
    let not_mine: SendAck = b
        .call(
            op::im::RECALL,
            &starling_proto::im::v1::RecallReq {
                conv: Some(g),
                seq: other,
                client_msg_id: "r3".into(),
            },
        )
        .unwrap();
    assert_eq!(not_mine.code, 403);
    for c in online.iter_mut() {
        common::eventually("the recall event arrives", || {
            c.pump(Duration::from_millis(20)).unwrap();
            c.messages(g)
                .iter()
                .any(|m| m.seq == event_seq && m.ref_seq == s)
        });
    }
    // The offline member (10) syncs later: s is a tombstone, the event is there.
    let mut late = im.client(10, "late", Codec::Protobuf);
    let held = late.messages(g);
    let tomb = held.iter().find(|m| m.seq == s).unwrap();
    assert!(tomb.recalled && tomb.content.is_empty(), "{tomb:?}");
    assert!(held.iter().any(|m| m.seq == event_seq && m.kind == starling_proto::im::v1::MsgKind::Recall as i32));
    // Unread: the creation (SYSTEM), the recalled message and the event do not count.
    let sync: SyncReply = late.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(
        sync.convs[0].unread, 1,
        "only 'kept' is unread: {:?}",
        sync.convs[0]
    );
    assert_eq!(
        sync.convs[0].last.as_ref().unwrap().seq,
        other,
        "last is never the RECALL event"
    );
    // After the window: 410.
    std::thread::sleep(Duration::from_millis(1600));
    let late_recall: SendAck = a
        .call(
            op::im::RECALL,
            &starling_proto::im::v1::RecallReq {
                conv: Some(g),
                seq: other,
                client_msg_id: "r4".into(),
            },
        )
        .unwrap();
    assert_eq!(late_recall.code, 410);
}

/// T11: an admin kick reaches the device as IM_KICK 4002 before its close, and the tokens
/// issued before it are refused afterwards.
#[test]
fn t11_admin_kick_is_4002_and_revokes_tokens() {
    let im = Im::start();
    let login = im.login(52, "k1", "ios", Codec::Protobuf);
    let mut c = ImClient::connect(login.clone()).unwrap();
    let v = admin_ok(&im, "POST", "/im/v1/users/52/kick", "{}");
    assert_eq!(v["data"]["kicked"], 1, "{v}");
    assert!(
        (0..200).any(|_| c.pump(Duration::from_millis(20)).is_err()),
        "closed"
    );
    assert_eq!(
        c.kicks.iter().map(|k| k.code).collect::<Vec<_>>(),
        vec![4002]
    );
    std::thread::sleep(Duration::from_millis(1100)); // tokens carry whole seconds
    assert!(
        ImClient::connect(login).is_err(),
        "the old token is revoked"
    );
    assert!(
        ImClient::connect(im.login(52, "k1", "ios", Codec::Protobuf)).is_ok(),
        "a new one works"
    );
}

/// T13: a group over `max_group_members` is refused with 413.
#[test]
fn t13_group_size_limit() {
    let im = Im::start_with(|c| c.im.max_group_members = 3);
    let (status, v) = admin(
        &im,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"300","name":"big","owner":"1","members":["2","3","4"]}"#,
    );
    assert_eq!((status, v["code"].as_i64()), (413, Some(413)), "{v}");
    admin_ok(
        &im,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"300","name":"ok","owner":"1","members":["2","3"]}"#,
    );
    let (status, _) = admin(
        &im,
        "POST",
        "/im/v1/groups/300/members",
        r#"{"uids":["4"]}"#,
    );
    assert_eq!(status, 413);
}

/// `m` with the admin token in the `authorization` metadata.
fn authed<M>(m: M) -> tonic::Request<M> {
    let mut r = tonic::Request::new(m);
    let bearer = format!("Bearer {ADMIN}").parse().unwrap();
    r.metadata_mut().insert("authorization", bearer);
    r
}

/// The all-in-one serves `starling.im.v1.Admin` on its gRPC port when IM has an admin token:
/// a group created and a message sent over gRPC reach a member's device like any other.
/// Without IM, no gRPC port is bound.
#[test]
fn admin_over_grpc_on_the_all_in_one() {
    use starling_im::admin::grpc::AdminClient;
    use starling_proto::im::v1::{ConvKind, ConvName, CreateGroupRequest, SendMessageRequest};
    let im = Im::start();
    let running = im.server.running.as_ref().unwrap();
    let addr = running.grpc_addr().expect("bound: IM has an admin token");
    let mut c = ImClient::connect(im.login(61, "k1", "ios", Codec::Protobuf)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ack = rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut admin = AdminClient::new(ch);
        let g = CreateGroupRequest {
            gid: 400,
            name: "g".into(),
            owner: 60,
            members: vec![61],
            ..Default::default()
        };
        admin.create_group(authed(g)).await.unwrap();
        let m = SendMessageRequest {
            from: 60,
            conv: Some(ConvName {
                kind: ConvKind::Group as i32,
                id: 400,
                ..Default::default()
            }),
            client_msg_id: "over-grpc-1".into(),
            content_type: 1,
            content: "over gRPC".into(),
            ..Default::default()
        };
        admin.send_message(authed(m)).await.unwrap().into_inner()
    });
    assert_eq!(ack.seq, 2, "after group_created");
    for _ in 0..100 {
        if c.seqs(group(400)).contains(&ack.seq) {
            break;
        }
        c.pump(Duration::from_millis(50)).unwrap();
    }
    let got = c.messages(group(400)).iter().find(|m| m.seq == ack.seq);
    assert_eq!(got.map(|m| m.content.as_str()), Some("over gRPC"));

    let goim = common::start();
    assert_eq!(goim.running.as_ref().unwrap().grpc_addr(), None);
}

//! IM acceptance scenarios on the all-in-one with the embedded store (reference im.md §9):
//! real sockets, the reference client of §5.4 (`common/im_client.rs`), over TCP with protobuf
//! and over WebSocket with JSON. Group scenarios are in `im_groups.rs`, the crash scenarios
//! (T3, T14) in `im_crash.rs`.

mod common;

use common::im_client::{ImClient, group, p2p};
use common::im_server::*;
use common::*;
use starling_im::token::Tokens;
use starling_proto::im::v1::{
    MarkReq, PullReply, PullReq, Result as ImResult, SendAck, SyncReply, SyncReq, event,
    pull_req::Direction,
};
use starling_proto::op::{self, Codec};
use std::collections::HashSet;
use std::time::Duration;

/// T1: every message sent twice back to back, every 10th also resent after dropping the
/// connection before its ack; the peer sees each once, in seq order.
fn idempotent_send(im: Im, codec: Codec, n: usize) {
    let mut a = im.client(1, "a-1", codec);
    let mut b = im.client(2, "b-1", codec);
    let to_b = p2p(2);
    let mut acks_by_id: Vec<Vec<SendAck>> = Vec::new();
    for i in 0..n {
        let id = format!("m-{i}");
        let content = format!("hello {i}");
        let mut acks = a.send(to_b, &id, &content);
        acks.extend(a.send(to_b, &id, &content));
        if i % 10 == 0 {
            a.send_and_drop(to_b, &id, &content);
            acks.extend(a.send(to_b, &id, &content));
        }
        acks_by_id.push(acks);
    }
    for (i, acks) in acks_by_id.iter().enumerate() {
        let first = (acks[0].seq, acks[0].msg_id);
        assert!(
            acks.iter()
                .all(|a| a.code == 0 && (a.seq, a.msg_id) == first),
            "message {i}: {acks:?}"
        );
        assert_eq!(
            acks.iter().filter(|a| !a.duplicate).count(),
            1,
            "message {i}: one original"
        );
        assert_eq!(first.0, i as u64 + 1, "seqs are contiguous from 1");
    }
    common::eventually("b has every message", || {
        b.pump(Duration::from_millis(50)).unwrap();
        b.seqs(p2p(1)).len() == n
    });
    let seqs = b.seqs(p2p(1));
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "visible once each, in order"
    );
    let texts: Vec<String> = b
        .messages(p2p(1))
        .iter()
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(
        texts,
        (0..n).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );
    // The store holds exactly n: a backward pull from the newest reaches seq 1 and no further.
    let last: PullReply = b
        .call(
            op::im::PULL,
            &PullReq {
                conv: Some(p2p(1)),
                dir: Direction::Backward as i32,
                from_seq: 0,
                limit: 1,
            },
        )
        .unwrap();
    assert_eq!(last.last_seq, n as u64);
}

#[test]
fn t1_idempotent_send_tcp_protobuf() {
    idempotent_send(Im::start(), Codec::Protobuf, 1000);
}

#[test]
fn t1_idempotent_send_websocket_json() {
    idempotent_send(Im::start(), Codec::Json, 200);
}

/// T1 on the all-in-one with `im.store = "postgres"` (a real PostgreSQL, its own database).
#[test]
fn t1_idempotent_send_on_postgres() {
    let url = starling_cluster::testkit::Postgres::shared().create_database();
    let im = Im::start_with(|c| {
        c.im.store = starling_im::config::StoreKind::Postgres;
        c.im.postgres_url = url;
    });
    idempotent_send(im, Codec::Protobuf, 300);
}

/// T2: the same client_msg_id with other content is a conflict; the original is unchanged.
#[test]
fn t2_reused_id_with_other_content_is_409() {
    let im = Im::start();
    for codec in [Codec::Protobuf, Codec::Json] {
        let mut a = im.client(10, &format!("a-{codec:?}"), codec);
        let conv = p2p(11);
        let id = format!("x-{codec:?}");
        let ok = a.send(conv, &id, "original");
        assert_eq!(ok[0].code, 0);
        let clash = a.send(conv, &id, "something else");
        assert_eq!(clash.len(), 1);
        assert_eq!(clash[0].code, 409, "{clash:?}");
        let page: PullReply = a
            .call(
                op::im::PULL,
                &PullReq {
                    conv: Some(conv),
                    dir: Direction::Backward as i32,
                    from_seq: 0,
                    limit: 10,
                },
            )
            .unwrap();
        let m = page
            .messages
            .iter()
            .find(|m| m.client_msg_id == id)
            .unwrap();
        assert_eq!((m.seq, m.content.as_str()), (ok[0].seq, "original"));
    }
}

/// A client whose cache came from another store (wiped, restored) is told to reset by its
/// first sync and ends with the new store's messages only.
#[test]
fn a_new_store_epoch_resets_the_client() {
    let old = Im::start();
    let mut a = old.client(25, "a", Codec::Protobuf);
    assert_eq!(a.send(p2p(26), "before", "x")[0].code, 0);
    let old_epoch = a.epoch;
    assert_ne!(old_epoch, 0);
    let new = Im::start();
    let mut writer = new.client(26, "w", Codec::Protobuf);
    assert_eq!(writer.send(p2p(25), "after-1", "y")[0].code, 0);
    assert_eq!(writer.send(p2p(25), "after-2", "y")[0].code, 0);
    let probe: SyncReply = a
        .call(
            op::im::SYNC,
            &SyncReq {
                epoch: old_epoch,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!probe.reset, "same store, same epoch");
    // The reconnect to the new store syncs with the old epoch: reset, cache rebuilt.
    a.login.addr = new.server.tcp;
    a.reconnect().unwrap();
    assert_ne!(a.epoch, old_epoch, "the client adopted the new epoch");
    let ids: Vec<String> = a
        .messages(p2p(26))
        .iter()
        .map(|m| m.client_msg_id.clone())
        .collect();
    assert_eq!(
        ids,
        ["after-1", "after-2"],
        "the old store's message is gone from the cache"
    );
    let r: SyncReply = a
        .call(
            op::im::SYNC,
            &SyncReq {
                epoch: old_epoch,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.reset && r.convs.is_empty(), "{r:?}");
}

/// Typing reaches the P2P peer's devices, is not stored, and is limited to one per 3 s per
/// user and conversation.
#[test]
fn typing_is_pushed_not_stored_and_rate_limited() {
    let im = Im::start();
    let mut a = im.client(27, "a", Codec::Protobuf);
    let mut b = im.client(28, "b", Codec::Json);
    let t = starling_proto::im::v1::TypingReq {
        conv: Some(p2p(28)),
        typing: true,
    };
    let r: ImResult = a.call(op::im::TYPING, &t).unwrap();
    assert_eq!(r.code, 0);
    common::eventually("b sees a typing", || {
        b.pump(Duration::from_millis(20)).unwrap();
        b.events
            .iter()
            .any(|e| e.r#type == event::Type::Typing as i32 && e.uid == 27 && e.typing)
    });
    let again: ImResult = a.call(op::im::TYPING, &t).unwrap();
    assert_eq!(again.code, 429);
    assert!(again.retry_after_ms > 0);
    let s: SyncReply = b.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert!(s.convs.is_empty(), "typing stores nothing");
    // A user who blocked the sender gets no typing either.
    admin_ok(
        &im,
        "PUT",
        "/im/v1/users/29/contacts/27",
        r#"{"state":"blocked"}"#,
    );
    let t = starling_proto::im::v1::TypingReq {
        conv: Some(p2p(29)),
        typing: true,
    };
    let blocked: ImResult = a.call(op::im::TYPING, &t).unwrap();
    assert_eq!(blocked.code, 403);
}

/// T10 (P2P): a read on one device reaches the user's other online device and the peer; an
/// offline device's next sync shows the unread left.
#[test]
fn t10_read_state_across_devices() {
    let im = Im::start();
    let mut peer = im.client(31, "peer", Codec::Protobuf);
    for i in 0..100 {
        assert_eq!(peer.send(p2p(30), &format!("r-{i}"), "x")[0].code, 0);
    }
    let mut d1 = im.client(30, "d1", Codec::Protobuf);
    let mut d2 = im.client(30, "d2", Codec::Json);
    let r: ImResult = d1
        .call(
            op::im::READ,
            &MarkReq {
                conv: Some(p2p(31)),
                seq: 80,
            },
        )
        .unwrap();
    assert_eq!(r.code, 0);
    common::eventually("d2 gets the read event", || {
        d2.pump(Duration::from_millis(20)).unwrap();
        d2.events
            .iter()
            .any(|e| e.r#type == event::Type::Read as i32 && e.seq == 80)
    });
    common::eventually("the peer gets the read receipt", || {
        peer.pump(Duration::from_millis(20)).unwrap();
        peer.events
            .iter()
            .any(|e| e.r#type == event::Type::Read as i32 && e.seq == 80 && e.uid == 30)
    });
    assert!(
        d1.events
            .iter()
            .all(|e| e.r#type != event::Type::Read as i32),
        "not echoed to the reader"
    );
    let mut d3 = im.client(30, "d3", Codec::Protobuf);
    let s: SyncReply = d3.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!((s.convs[0].read_seq, s.convs[0].unread), (80, 20));
    let ps: SyncReply = peer.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(ps.convs[0].peer_read_seq, 80);
    // Delivered marks: the P2P peer gets a DELIVERED event and sees peer_recv_seq.
    let r: ImResult = d1
        .call(
            op::im::RECV,
            &MarkReq {
                conv: Some(p2p(31)),
                seq: 90,
            },
        )
        .unwrap();
    assert_eq!(r.code, 0);
    common::eventually("the peer gets the delivered receipt", || {
        peer.pump(Duration::from_millis(20)).unwrap();
        peer.events
            .iter()
            .any(|e| e.r#type == event::Type::Delivered as i32 && e.seq == 90 && e.uid == 30)
    });
    let ps: SyncReply = peer.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(ps.convs[0].peer_recv_seq, 90);
    // Marks never go down.
    let _: ImResult = d1
        .call(
            op::im::READ,
            &MarkReq {
                conv: Some(p2p(31)),
                seq: 10,
            },
        )
        .unwrap();
    let s: SyncReply = d3.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(s.convs[0].read_seq, 80);
}

/// T13: content over max_content → 413; the burst of send_rate is 2×; bad bodies get 400 and
/// the connection stays up.
#[test]
fn t13_limits() {
    let im = Im::start_with(|c| {
        c.im.send_rate = 20;
        c.im.max_content = 100;
    });
    let mut a = im.client(40, "a", Codec::Protobuf);
    let big = "x".repeat(101);
    let r: SendAck = a
        .call(op::im::SEND, &send_req(p2p(41), "big", &big))
        .unwrap();
    assert_eq!(r.code, 413);
    // A token bucket of 40 refilled at 20/s: the first 40 sends pass at once, and a 429 with
    // a wait comes before the sends outrun the refill.
    let start = std::time::Instant::now();
    let mut passed = 0;
    let limited = loop {
        let r: SendAck = a
            .call(op::im::SEND, &send_req(p2p(41), &format!("b{passed}"), "x"))
            .unwrap();
        if r.code != 0 {
            break r;
        }
        passed += 1;
        assert!(passed < 1000, "never limited");
    };
    let refilled = (start.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        passed >= 40 && passed <= 40 + refilled,
        "{passed} passed, {refilled} refilled"
    );
    assert_eq!(limited.code, 429);
    assert!(limited.retry_after_ms > 0, "retry_after_ms is set");
    // A body that is not a SendReq: 400, and the connection answers the next request.
    let p = a.request(op::im::SEND, &[0xff, 0xff, 0xff]).unwrap();
    let bad: SendAck = a.decode(&p.body);
    assert_eq!(bad.code, 400);
    let empty_id: SendAck = a.call(op::im::SEND, &send_req(p2p(41), "", "x")).unwrap();
    assert_eq!(empty_id.code, 400);
    let to_self: SendAck = a
        .call(op::im::SEND, &send_req(p2p(40), "self", "x"))
        .unwrap();
    assert_eq!(to_self.code, 400);
    let s: SyncReply = a.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(s.code, 0);
    // JSON: a body that is not JSON is 400 too, and the connection stays.
    let mut j = im.client(42, "j", Codec::Json);
    let p = j.request(op::im::SYNC, b"{nope").unwrap();
    let r: SyncReply = j.decode(&p.body);
    assert_eq!(r.code, 400);
    // Errors come in each op's own reply message (every reply starts with `code`), so a
    // strict decoder of that message reads them; unknown ops get one too.
    let p = a.request(op::im::PULL, &[0x0e]).unwrap();
    assert_eq!(
        <PullReply as prost::Message>::decode(p.body.as_ref())
            .unwrap()
            .code,
        400
    );
    let p = a.request(op::im::SYNC, &[0x0e]).unwrap();
    assert_eq!(
        <SyncReply as prost::Message>::decode(p.body.as_ref())
            .unwrap()
            .code,
        400
    );
    let p = a.request(op::im::MEMBERS, &[0x0e]).unwrap();
    let m = <starling_proto::im::v1::MembersReply as prost::Message>::decode(p.body.as_ref());
    assert_eq!(m.unwrap().code, 400);
    let p = a.request(36, b"").unwrap();
    assert_eq!(
        <ImResult as prost::Message>::decode(p.body.as_ref())
            .unwrap()
            .code,
        400
    );
    // A newer client's extra JSON field is ignored, not refused.
    let p = j
        .request(op::im::SYNC, br#"{"limit":10,"someNewField":true}"#)
        .unwrap();
    assert_eq!(j.decode::<SyncReply>(&p.body).code, 0);
    let s: SyncReply = j.call(op::im::SYNC, &SyncReq::default()).unwrap();
    assert_eq!(s.code, 0);
}

/// T11: multi-device policies and kick notices.
#[test]
fn t11_one_per_platform_kicks_the_older_same_platform_connection() {
    let im = Im::start_with(|c| c.im.multi_login = starling_im::config::MultiLogin::OnePerPlatform);
    let mut ios1 = ImClient::connect(im.login(50, "ios-1", "ios", Codec::Protobuf)).unwrap();
    let mut android = ImClient::connect(im.login(50, "and-1", "android", Codec::Protobuf)).unwrap();
    let _ios2 = ImClient::connect(im.login(50, "ios-2", "ios", Codec::Protobuf)).unwrap();
    // ios-1 receives IM_KICK{4001, "ios"} and then the close.
    let closed = (0..200).any(|_| ios1.pump(Duration::from_millis(20)).is_err());
    assert!(closed, "the replaced connection is closed");
    assert_eq!(ios1.kicks.len(), 1, "one kick notice before the close");
    assert_eq!(
        (ios1.kicks[0].code, ios1.kicks[0].by_platform.as_str()),
        (4001, "ios")
    );
    android
        .pump(Duration::from_millis(200))
        .expect("android stays");
    assert!(android.kicks.is_empty());
    // The same key reconnecting: no notice.
    let mut again = ImClient::connect(im.login(50, "and-1", "android", Codec::Protobuf)).unwrap();
    let _ = android.pump(Duration::from_millis(300));
    assert!(android.kicks.is_empty(), "same key: silent");
    again.pump(Duration::from_millis(100)).unwrap();
}

#[test]
fn t11_single_keeps_only_the_newest() {
    let im = Im::start_with(|c| c.im.multi_login = starling_im::config::MultiLogin::Single);
    let mut first = ImClient::connect(im.login(51, "k1", "ios", Codec::Protobuf)).unwrap();
    let mut second = ImClient::connect(im.login(51, "k2", "web", Codec::Json)).unwrap();
    let _third = ImClient::connect(im.login(51, "k3", "android", Codec::Protobuf)).unwrap();
    for c in [&mut first, &mut second] {
        assert!((0..200).any(|_| c.pump(Duration::from_millis(20)).is_err()));
        assert_eq!(
            c.kicks.iter().map(|k| k.code).collect::<Vec<_>>(),
            vec![4001]
        );
    }
}

/// T12 (the IM side): with IM on, a goim connection sending op 20 gets goim's empty echo, and
/// asking for IM with a bad token (or on a server with IM off) closes the connection.
#[test]
fn t12_goim_connections_unaffected_and_bad_opt_ins_refused() {
    let im = Im::start();
    let mut goim = Client::tcp(im.server.tcp);
    let reply = goim.auth(&token(60, "g", "", &[1000]));
    assert!(reply.body.is_empty(), "goim's empty auth reply");
    goim.send(1, op::im::SEND, 5, b"anything");
    let p = goim.expect();
    assert_eq!(
        (p.op, p.seq, p.body.len()),
        (op::im::SEND, 5, 0),
        "goim's echo of op 20 (its default branch)"
    );
    // A forged token: closed.
    let mut bad = im.login(61, "b", "test", Codec::Protobuf);
    bad.im_token = Tokens::new("some-other-secret-0123456789")
        .unwrap()
        .mint(61, "test", 60)
        .unwrap();
    assert!(ImClient::connect(bad).is_err());
    // A token for another user: closed.
    let mut other = im.login(62, "c", "test", Codec::Protobuf);
    other.im_token = Tokens::new(SECRET).unwrap().mint(63, "test", 60).unwrap();
    assert!(ImClient::connect(other).is_err());
    // IM off: asking for it is refused rather than silently ignored.
    let off = start();
    let mut l = im.login(64, "d", "test", Codec::Protobuf);
    l.addr = off.tcp;
    assert!(ImClient::connect(l).is_err());
}

/// T5: a member whose path drops 5 % of op-41 packets still ends with every message, each gap
/// healed by a pull.
#[test]
fn t5_lost_pushes_are_healed_by_pulls() {
    let im = Im::start();
    let mut a = im.client(70, "a", Codec::Protobuf);
    let mut b = im.client(71, "b", Codec::Protobuf);
    b.drop_pushes = 0.05;
    b.gap_wait = Duration::from_millis(200);
    for i in 0..400 {
        assert_eq!(a.send(p2p(71), &format!("l-{i}"), "x")[0].code, 0);
        if i % 20 == 0 {
            b.pump(Duration::from_millis(1)).unwrap();
        }
    }
    // A lost last push leaves no gap to see: the client's periodic resync (§5.4 step 4) heals it.
    common::eventually("b holds 1..=400", || {
        b.pump(Duration::from_millis(300)).unwrap();
        if b.seqs(p2p(70)).len() < 400 {
            b.sync_all().unwrap();
        }
        b.seqs(p2p(70)).len() == 400
    });
    assert_eq!(b.seqs(p2p(70)), (1..=400).collect::<Vec<_>>());
    assert!(b.gap_pulls > 0, "some gaps were healed by pulls");
}

/// T7: messages keep arriving while B reconnects and syncs; B's sequence ends complete.
#[test]
fn t7_sync_while_messages_arrive() {
    let im = Im::start();
    let login_a = im.login(80, "a", "test", Codec::Protobuf);
    let sender = std::thread::spawn(move || {
        let mut a = ImClient::connect(login_a).unwrap();
        for i in 0..150 {
            assert_eq!(a.send(p2p(81), &format!("s-{i}"), "x")[0].code, 0);
            std::thread::sleep(Duration::from_millis(20)); // 50/s
        }
    });
    let mut b = im.client(81, "b", Codec::Protobuf);
    for _ in 0..5 {
        b.pump(Duration::from_millis(300)).unwrap();
        b.drop_connection();
        std::thread::sleep(Duration::from_millis(100));
        b.reconnect().unwrap();
    }
    sender.join().unwrap();
    common::eventually("b holds 1..=150", || {
        b.pump(Duration::from_millis(100)).unwrap();
        b.seqs(p2p(80)).len() == 150
    });
    assert_eq!(b.seqs(p2p(80)), (1..=150).collect::<Vec<_>>());
}

/// Sends reach every online device of both users except the sending connection.
#[test]
fn multi_device_delivery_reaches_the_senders_other_devices() {
    let im = Im::start();
    let mut a1 = im.client(90, "a1", Codec::Protobuf);
    let mut a2 = im.client(90, "a2", Codec::Json);
    let mut b = im.client(91, "b", Codec::Protobuf);
    assert_eq!(a1.send(p2p(91), "one", "hi")[0].code, 0);
    common::eventually("a2 and b have it", || {
        a2.pump(Duration::from_millis(20)).unwrap();
        b.pump(Duration::from_millis(20)).unwrap();
        a2.seqs(p2p(91)) == [1] && b.seqs(p2p(90)) == [1]
    });
    a1.pump(Duration::from_millis(200)).unwrap();
    assert_eq!(a1.raw, 0, "not pushed back to the sending connection");
    let seen: HashSet<i64> = [
        a2.messages(p2p(91))[0].sender,
        b.messages(p2p(90))[0].sender,
    ]
    .into();
    assert_eq!(seen, HashSet::from([90]));
    let _ = group(1);
}

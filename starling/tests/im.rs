//! IM acceptance scenarios on the all-in-one with the embedded store (reference im.md §9):
//! real sockets, the reference client of §5.4 (`common/im_client.rs`), over TCP with protobuf
//! and over WebSocket with JSON. The crash scenarios (T3, T14) are in `im_crash.rs`.

mod common;

use common::im_client::{ImClient, Login, group, p2p};
use common::*;
use starling::Config;
use starling_im::token::Tokens;
use starling_proto::im::v1::{
    ConvRef, MarkReq, PullReply, PullReq, Result as ImResult, SendAck, SendReq, SyncReply, SyncReq,
    event, pull_req::Direction,
};
use starling_proto::op::{self, Codec};
use std::collections::HashSet;
use std::time::Duration;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const ADMIN: &str = "admin-token-for-tests";

/// The all-in-one with IM on, its store in a fresh directory.
pub fn im_config(dir: &std::path::Path) -> Config {
    let mut c = test_config();
    c.im.enabled = true;
    c.im.token_secret = SECRET.into();
    c.im.admin_token = ADMIN.into();
    c.im.path = dir.join("im");
    c.im.send_rate = 100_000;
    c
}

pub struct Im {
    pub server: Server,
    pub dir: tempfile::TempDir,
    tokens: Tokens,
}

impl Im {
    pub fn start() -> Im {
        Im::start_with(|_| {})
    }

    pub fn start_with(edit: impl FnOnce(&mut Config)) -> Im {
        let dir = tempfile::tempdir().unwrap();
        let mut c = im_config(dir.path());
        edit(&mut c);
        Im {
            server: start_with(c),
            dir,
            tokens: Tokens::new(SECRET).unwrap(),
        }
    }

    pub fn login(&self, mid: i64, key: &str, platform: &str, codec: Codec) -> Login {
        Login {
            addr: if codec == Codec::Json {
                self.server.ws
            } else {
                self.server.tcp
            },
            ws: codec == Codec::Json,
            codec,
            mid,
            key: key.into(),
            platform: platform.into(),
            im_token: self.tokens.mint(mid, platform, 3600).unwrap(),
        }
    }

    pub fn client(&self, mid: i64, key: &str, codec: Codec) -> ImClient {
        ImClient::connect(self.login(mid, key, "test", codec)).expect("IM login")
    }
}

fn send_req(conv: ConvRef, id: &str, content: &str) -> SendReq {
    SendReq {
        client_msg_id: id.into(),
        conv: Some(conv),
        content_type: 1,
        content: content.into(),
        ..Default::default()
    }
}

/// T1: every message sent twice back to back, every 10th also resent after dropping the
/// connection before its ack; the peer sees each once, in seq order.
fn idempotent_send(codec: Codec, n: usize) {
    let im = Im::start();
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
    idempotent_send(Codec::Protobuf, 1000);
}

#[test]
fn t1_idempotent_send_websocket_json() {
    idempotent_send(Codec::Json, 200);
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
    b.convs.clear();
    let pages = b.pull_forward(p2p(20), 100).unwrap();
    assert_eq!(pages.len(), 10);
    assert!(pages[..9].iter().all(|p| p.has_more) && !pages[9].has_more);
    assert_eq!(b.seqs(p2p(20)), (1..=1000).collect::<Vec<_>>());
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

/// One `/im/v1` call with the admin bearer token; (status, JSON).
pub fn admin(im: &Im, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(im.server.http).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let json = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or_default())
}

fn admin_ok(im: &Im, method: &str, path: &str, body: &str) -> serde_json::Value {
    let (status, v) = admin(im, method, path, body);
    assert_eq!(
        (status, v["code"].as_i64()),
        (200, Some(0)),
        "{method} {path}: {v}"
    );
    v
}

/// Sends `n` messages into `conv` from `senders` in parallel, `tag`ged ids.
fn fill(im: &Im, senders: &[i64], conv: ConvRef, n: usize, tag: &str) {
    let per = n / senders.len();
    assert_eq!(per * senders.len(), n);
    let threads: Vec<_> = senders
        .iter()
        .map(|&mid| {
            let login = im.login(mid, &format!("fill-{tag}-{mid}"), "test", Codec::Protobuf);
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut c = ImClient::connect(login).unwrap();
                for i in 0..per {
                    assert_eq!(c.send(conv, &format!("{tag}-{mid}-{i}"), "x")[0].code, 0);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

/// Pages backward from the newest with `limit`; returns (pages, seqs in order received).
fn history(c: &mut ImClient, conv: ConvRef, limit: u32) -> (Vec<PullReply>, Vec<u64>) {
    let (mut pages, mut seqs, mut from) = (Vec::new(), Vec::new(), 0);
    loop {
        let r: PullReply = c
            .call(
                op::im::PULL,
                &PullReq {
                    conv: Some(conv),
                    dir: Direction::Backward as i32,
                    from_seq: from,
                    limit,
                },
            )
            .unwrap();
        assert_eq!(r.code, 0, "{r:?}");
        seqs.extend(r.messages.iter().map(|m| m.seq));
        from = r.next_seq;
        let more = r.has_more;
        pages.push(r);
        if !more {
            return (pages, seqs);
        }
    }
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

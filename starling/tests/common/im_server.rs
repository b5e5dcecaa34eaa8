//! The IM test harness: the all-in-one with IM on (its store in a fresh directory), logins
//! with minted `im_token`s, and the `/im/v1` management API with the admin token.
#![allow(dead_code)]

use super::im_client::{ImClient, Login};
use super::{Server, start_with, test_config};
use starling::Config;
use starling_im::token::Tokens;
use starling_proto::im::v1::{ConvRef, PullReply, PullReq, SendReq, pull_req::Direction};
use starling_proto::op::{self, Codec};
use std::net::SocketAddr;

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

pub fn send_req(conv: ConvRef, id: &str, content: &str) -> SendReq {
    SendReq {
        client_msg_id: id.into(),
        conv: Some(conv),
        content_type: 1,
        content: content.into(),
        ..Default::default()
    }
}

/// One `/im/v1` call to `http` with bearer `token`; (status, JSON body).
pub fn admin_call(
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
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

/// One `/im/v1` call with the admin bearer token; (status, JSON).
pub fn admin(im: &Im, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    admin_call(im.server.http, ADMIN, method, path, body)
}

pub fn admin_ok(im: &Im, method: &str, path: &str, body: &str) -> serde_json::Value {
    let (status, v) = admin(im, method, path, body);
    assert_eq!(
        (status, v["code"].as_i64()),
        (200, Some(0)),
        "{method} {path}: {v}"
    );
    v
}

/// Sends `n` messages into `conv` from `senders` in parallel, `tag`ged ids.
pub fn fill(im: &Im, senders: &[i64], conv: ConvRef, n: usize, tag: &str) {
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
pub fn history(c: &mut ImClient, conv: ConvRef, limit: u32) -> (Vec<PullReply>, Vec<u64>) {
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

/// T3's check (reference im.md §9): `log`, a conversation's whole log in seq order, has
/// contiguous seqs from 1; each of `senders` (mids 1..=senders) × `per_sender` messages (id
/// `"{mid}-{k}"`, content `"{k}"`) is stored once; every acknowledged `(mid, k, seq)` is at its
/// seq; each sender's messages keep their order.
pub fn assert_nothing_acknowledged_lost(
    log: &[starling_proto::im::v1::Message],
    acked: &[(i64, usize, u64)],
    senders: i64,
    per_sender: usize,
) {
    use starling_proto::im::v1::{Message, MsgKind};
    use std::collections::{HashMap, HashSet};
    let total = senders as usize * per_sender;
    assert_eq!(
        log.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "no holes"
    );
    // SYSTEM messages (a group's "created") are not the senders'.
    let normal: Vec<&Message> = log
        .iter()
        .filter(|m| m.kind == MsgKind::Normal as i32)
        .collect();
    let ids: HashSet<&str> = normal.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(
        (normal.len(), ids.len()),
        (total, total),
        "each stored exactly once"
    );
    let by_seq: HashMap<u64, &Message> = log.iter().map(|m| (m.seq, m)).collect();
    assert_eq!(acked.len(), total, "every send acknowledged");
    for (mid, k, seq) in acked {
        let m = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged seq {seq} lost"));
        assert_eq!(m.client_msg_id, format!("{mid}-{k}"), "seq {seq}");
    }
    for mid in 1..=senders {
        let ks: Vec<usize> = normal
            .iter()
            .filter(|m| m.sender == mid)
            .map(|m| m.content.parse().unwrap())
            .collect();
        assert_eq!(
            ks,
            (0..per_sender).collect::<Vec<_>>(),
            "sender {mid}'s order"
        );
    }
}

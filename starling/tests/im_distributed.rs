//! IM in the distributed deployment (reference im.md §7.1, §7.6): the `logic` process runs IM
//! with its device table in Redis, two comets on two hosts, pushes through the Kafka-protocol
//! broker and job. One logic node, since the embedded store belongs to one process (several
//! logic nodes need PostgreSQL). Needs what `distributed.rs` needs: root, the tier binaries,
//! redis-server and tansu (tools/test.sh).

mod cluster;
mod common;

use cluster::deploy::Cluster;
use cluster::eventually;
use common::im_client::{ImClient, Login, p2p};
use common::im_server::{ADMIN, SECRET, admin_call};
use starling_im::token::Tokens;
use starling_proto::op::Codec;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn login(addr: SocketAddr, mid: i64, key: &str, platform: &str) -> Login {
    Login {
        addr,
        ws: false,
        codec: Codec::Protobuf,
        mid,
        key: key.into(),
        platform: platform.into(),
        im_token: Tokens::new(SECRET)
            .unwrap()
            .mint(mid, platform, 3600)
            .unwrap(),
    }
}

/// An IM client, retried while its comet and logic are still starting.
fn connect(l: Login) -> ImClient {
    let mut r = Err(String::new());
    eventually(&format!("{} logs in", l.key), || {
        r = ImClient::connect(l.clone());
        r.is_ok()
    });
    r.unwrap()
}

/// Pumps `c` until `done` holds; fails after 20 s.
fn pump_until(c: &mut ImClient, what: &str, done: impl Fn(&ImClient) -> bool) {
    let end = Instant::now() + cluster::WAIT;
    while !done(c) {
        assert!(Instant::now() < end, "{}: never {what}", c.login.key);
        c.pump(Duration::from_millis(50))
            .unwrap_or_else(|_| panic!("{}: closed while waiting for {what}", c.login.key));
    }
}

/// `HKEYS key` over RESP (field names without line breaks).
fn redis_hkeys(addr: SocketAddr, key: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("HKEYS {key}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    // *N, then $len and the field for each.
    reply
        .split("\r\n")
        .skip(1)
        .skip(1)
        .step_by(2)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn im_across_two_comets_through_kafka_and_a_kick_from_the_other_host() {
    let c = Cluster::start_with(|dir| {
        format!(
            r#"
[im]
enabled = true
token_secret = "{SECRET}"
admin_token = "{ADMIN}"
path = "{}"
durability = "buffer"
multi_login = "one_per_platform"
send_rate = 1000
"#,
            dir.join("im").display()
        )
    });

    let mut a = connect(login(c.c1, 101, "a-ios", "ios"));
    let mut b = connect(login(c.c2, 102, "b-web", "web"));
    c.phase("101 logged in on comet1, 102 on comet2, through logic's IM");

    for i in 0..3 {
        let acks = a.send(p2p(102), &format!("a{i}"), &format!("from a {i}"));
        assert_eq!(acks.last().map(|k| k.code), Some(0), "{acks:?}");
    }
    pump_until(&mut b, "a's three messages", |b| {
        b.seqs(p2p(101)) == [1, 2, 3]
    });
    let acks = b.send(p2p(101), "b0", "from b");
    assert_eq!(acks.last().map(|k| (k.code, k.seq)), Some((0, 4)));
    pump_until(&mut a, "b's reply", |a| a.seqs(p2p(102)) == [1, 2, 3, 4]);
    assert_eq!(a.messages(p2p(102))[3].content, "from b");
    c.phase("P2P both ways: comet → logic → Kafka → job → the other comet");

    // A second ios login of 101, on comet2: the first, on comet1, is kicked through Kafka,
    // job and comet1, with the notice before the close.
    let mut a2 = connect(login(c.c2, 101, "a-ios-2", "ios"));
    let end = Instant::now() + cluster::WAIT;
    while a.pump(Duration::from_millis(50)).is_ok() {
        assert!(Instant::now() < end, "the first ios login was never closed");
    }
    assert_eq!(
        a.kicks
            .iter()
            .map(|k| (k.code, k.by_platform.as_str()))
            .collect::<Vec<_>>(),
        [(4001, "ios")],
        "one IM_KICK before the close"
    );
    c.phase("a second ios login on comet2 kicked the first on comet1 with IM_KICK{4001, ios}");

    // The device table in Redis names the survivor and its comet; b is untouched.
    let (status, v) = admin_call(c.http, ADMIN, "GET", "/im/v1/users/101/online", "");
    assert_eq!(status, 200, "{v}");
    let devices = v["data"]["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), 1, "{v}");
    assert_eq!(
        (devices[0]["key"].as_str(), devices[0]["server"].as_str()),
        (Some("a-ios-2"), Some("comet2"))
    );
    // ... and it is kept in Redis, where every logic node reads it.
    assert_eq!(
        redis_hkeys(c.redis.addr, "starling:im:dev:{101}"),
        ["a-ios-2"],
        "the device hash in Redis"
    );
    let acks = b.send(p2p(101), "b1", "to the new device");
    assert_eq!(acks.last().map(|k| k.code), Some(0), "{acks:?}");
    pump_until(&mut a2, "b's message on the new device", |a2| {
        a2.messages(p2p(102))
            .iter()
            .any(|m| m.content == "to the new device")
    });
    assert!(b.kicks.is_empty());
    c.phase("the survivor gets new messages; the other user was not touched");
}

//! The distributed deployment on several hosts: two comets, one logic and one job, each in
//! its own network namespace with its own address, talking over gRPC, a real `redis-server`
//! and a real Kafka-protocol broker (`tansu`) in the root namespace. Needs root (for
//! `ip netns`), the tier binaries (`cargo build --bins`), redis-server and tansu: tools/test.sh
//! provides all of them. Run with `--nocapture` to see each phase.

mod cluster;
mod common;

use cluster::{Member, Net, Proc, bin, call, eventually, redis_get};
use starling_cluster::testkit::{Redis, Tansu};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TOPIC: &str = "goim-push-topic";

fn registry_conf() -> &'static str {
    "[registry]\ninterval = \"300ms\"\nttl = \"1500ms\"\n"
}

fn comet_conf(name: &str, ip: &str, logic: &str, redis: &str) -> String {
    // tools/test.sh runs the integration tests again on the epoll driver.
    let driver = std::env::var("STARLING_TEST_DRIVER").unwrap_or_else(|_| "auto".into());
    format!(
        r#"[comet]
server_id = "{name}"
driver = "{driver}"
workers = 1
online_interval = "300ms"
session_renew = "1s"
lame_duck = "0s"
[grpc]
bind = "{ip}:3109"
[logic]
addrs = ["{logic}:3119"]
[redis]
url = "{redis}"
{}"#,
        registry_conf()
    )
}

fn logic_conf(redis: &str, brokers: &str) -> String {
    format!(
        r#"[logic]
online_expire = "5s"
[logic.node]
heartbeat = "2s"
heartbeat_max = 5
[grpc]
online_refresh = "300ms"
[redis]
url = "{redis}"
expire = "6s"
[kafka]
brokers = ["{brokers}"]
topic = "{TOPIC}"
{}"#,
        registry_conf()
    )
}

fn job_conf(redis: &str, brokers: &str) -> String {
    format!(
        r#"[kafka]
brokers = ["{brokers}"]
topic = "{TOPIC}"
session_timeout = "3s"
[redis]
url = "{redis}"
[comets]
timeout = "2s"
retries = 2
{}"#,
        registry_conf()
    )
}

/// POSTs `body` to logic and asserts it was accepted.
fn push(http: SocketAddr, path: &str, body: &str) {
    let (code, v) = call(http, "POST", path, body.as_bytes());
    assert_eq!(code, 0, "{path} {body}: {v}");
}

fn phase(start: Instant, what: &str) {
    println!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// Each member's pushes with `prefix`, exactly `want`, in order.
fn assert_exact(m: &Member, prefix: &str, want: &[String]) {
    assert_eq!(m.with_prefix(prefix), want, "{} ({prefix})", m.key);
}

fn seq(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn pushes_cross_hosts_and_survive_failures() {
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("starling-multihost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut net = Net::new();
    let root: std::net::IpAddr = net.root_ip().parse().unwrap();
    let mut redis = Redis::start_on(root);
    let mut broker = Tansu::start_on(root);
    broker.create_topic(TOPIC, 3);
    let redis_url = redis.url();
    let brokers = broker.addr.to_string();
    let (ns_c1, ip_c1) = net.host("comet1", 11);
    let (ns_c2, ip_c2) = net.host("comet2", 12);
    let (ns_l, ip_l) = net.host("logic", 13);
    let (ns_j, _ip_j) = net.host("job", 14);
    phase(
        t0,
        &format!(
            "hosts: comet1 {ip_c1}, comet2 {ip_c2}, logic {ip_l}, job .14; redis {}, broker {}",
            redis.addr, broker.addr
        ),
    );

    let mut logic = Proc::start(
        &dir,
        "logic",
        &ns_l,
        bin("logic"),
        &logic_conf(&redis_url, &brokers),
    );
    let mut comet1 = Proc::start(
        &dir,
        "comet1",
        &ns_c1,
        bin("comet"),
        &comet_conf("comet1", &ip_c1, &ip_l, &redis_url),
    );
    let comet2 = Proc::start(
        &dir,
        "comet2",
        &ns_c2,
        bin("comet"),
        &comet_conf("comet2", &ip_c2, &ip_l, &redis_url),
    );
    let mut job = Proc::start(
        &dir,
        "job",
        &ns_j,
        bin("job"),
        &job_conf(&redis_url, &brokers),
    );
    let http: SocketAddr = format!("{ip_l}:3111").parse().unwrap();
    let c1: SocketAddr = format!("{ip_c1}:3101").parse().unwrap();
    let c2: SocketAddr = format!("{ip_c2}:3101").parse().unwrap();
    let comets_listed = |want: &[&str]| {
        let (code, v) = call(http, "GET", "/goim/nodes/instances", b"");
        let mut names: Vec<String> = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["hostname"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        code == 0 && names == want
    };
    eventually("both comets registered", || {
        comets_listed(&["comet1", "comet2"])
    });
    let (code, v) = call(http, "GET", "/goim/nodes/weighted?platform=web", b"");
    let mut nodes: Vec<&str> = v["data"]["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    nodes.sort();
    assert_eq!(
        (code, nodes),
        (0, vec!["comet1.goim.io", "comet2.goim.io"]),
        "{v}"
    );
    phase(
        t0,
        "logic lists comet1 and comet2 from the Redis registry (instances and weighted)",
    );

    // --- pushes by key, by mid and to a room with members on both hosts
    let room = "live://7";
    let join = |addr, mid, key: &str| {
        let mut r = Err(String::new());
        for _ in 0..50 {
            r = Member::join(addr, mid, key, room);
            if r.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        r.unwrap_or_else(|e| panic!("{key} could not join: {e}"))
    };
    let mut a1 = join(c1, 1, "a1");
    let mut a2 = join(c2, 1, "a2"); // mid 1 on both comets
    let mut b1 = join(c1, 2, "b1");
    let mut b2 = join(c2, 3, "b2");
    for i in 0..5 {
        push(
            http,
            "/goim/push/keys?operation=1000&keys=a1&keys=b2",
            &format!("key-{i}"),
        );
        push(
            http,
            "/goim/push/mids?operation=1000&mids=1",
            &format!("mid-{i}"),
        );
    }
    for i in 0..20 {
        push(
            http,
            "/goim/push/room?operation=1000&type=live&room=7",
            &format!("room-{i}"),
        );
    }
    for i in 0..3 {
        push(http, "/goim/push/all?operation=1000", &format!("all-{i}"));
    }
    let (keys, mids, rooms) = (seq("key-", 5), seq("mid-", 5), seq("room-", 20));
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert!(
            m.until(|m| m.with_prefix("room-").len() >= 20),
            "{} room pushes: {:?}",
            m.key,
            m.got
        );
        m.pump(Duration::from_millis(300)); // anything duplicated would show up now
    }
    assert!(a1.until(|m| m.with_prefix("key-").len() >= 5 && m.with_prefix("mid-").len() >= 5));
    assert!(a2.until(|m| m.with_prefix("mid-").len() >= 5));
    assert!(b2.until(|m| m.with_prefix("key-").len() >= 5));
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert!(
            m.until(|m| m.with_prefix("all-").len() >= 3),
            "{} broadcast",
            m.key
        );
    }
    for m in [&a1, &a2, &b1, &b2] {
        assert_exact(m, "room-", &rooms);
        assert_exact(m, "all-", &seq("all-", 3));
    }
    assert_exact(&a1, "key-", &keys);
    assert_exact(&b2, "key-", &keys);
    assert_exact(&a1, "mid-", &mids);
    assert_exact(&a2, "mid-", &mids);
    assert_exact(&b1, "key-", &[]);
    assert_exact(&b1, "mid-", &[]);
    assert_exact(&a2, "key-", &[]);
    phase(
        t0,
        "key, mid, room and broadcast pushes: every connection got each message once, in order",
    );
    // Room counts are summed over both comets (RenewOnline → Redis ol_{server} → logic).
    assert!(
        a1.until(|m| m.online == 4),
        "heartbeat online {}",
        a1.online
    );
    eventually("online/room counts both comets", || {
        call(http, "GET", "/goim/online/room?type=live&rooms=7", b"").1["data"]["7"] == 4
    });
    phase(
        t0,
        "room live://7 counts 4 in heartbeat replies and /goim/online/room (2 per comet)",
    );

    // --- job killed mid-stream and restarted: nothing logic acknowledged is lost
    let sent = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                push(
                    http,
                    "/goim/push/room?operation=1000&type=live&room=7",
                    &format!("s-{i}"),
                );
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 50 {
        a1.pump(Duration::from_millis(20));
    }
    job.kill();
    phase(
        t0,
        &format!(
            "job killed (SIGKILL) after {} of 100 room pushes were acknowledged",
            sent.load(Ordering::Relaxed)
        ),
    );
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        m.pump(Duration::from_millis(100));
    }
    job.resume();
    pusher.join().unwrap();
    let all = seq("s-", 100);
    let mut dups = 0;
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let ok = m.until(|m| {
            let got = m.with_prefix("s-");
            all.iter().all(|s| got.contains(s))
        });
        let got = m.with_prefix("s-");
        assert!(
            ok,
            "{} lost: {:?}",
            m.key,
            all.iter().filter(|s| !got.contains(s)).collect::<Vec<_>>()
        );
        let mut first: Vec<&String> = Vec::new();
        for s in &got {
            if !first.contains(&s) {
                first.push(s);
            }
        }
        assert_eq!(
            first,
            all.iter().collect::<Vec<_>>(),
            "{}: first arrivals out of order",
            m.key
        );
        dups += got.len() - all.len();
    }
    phase(
        t0,
        &format!(
            "job restarted: all 100 arrived at all 4 connections, first arrivals in order; {dups} redelivered duplicates in all"
        ),
    );

    // --- job killed while a room batch waits on a stalled comet: its offsets were never
    // stored, so the restarted job hands the messages over again (goim, committing first,
    // would lose them for comet2's members)
    comet2.signal("STOP");
    for i in 0..30 {
        push(
            http,
            "/goim/push/room?operation=1000&type=live&room=7",
            &format!("w-{i}"),
        );
    }
    assert!(
        a1.until(|m| m.got.contains(&"w-0".to_string())),
        "comet1 got the first batch"
    );
    std::thread::sleep(Duration::from_millis(300));
    job.kill();
    comet2.signal("CONT");
    eventually("comet2 back in the registry", || {
        comets_listed(&["comet1", "comet2"])
    });
    job.resume();
    let all = seq("w-", 30);
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let ok = m.until(|m| all.iter().all(|s| m.got.contains(s)));
        assert!(ok, "{} lost w- messages: {:?}", m.key, m.with_prefix("w-"));
    }
    phase(
        t0,
        "job killed while comet2 was stopped mid-batch: after restart comet2's members got all 30",
    );

    // --- Redis down: connections stay, logins refused, pushes -500; then it recovers
    redis.stop();
    let hb = [a1.heartbeats, b2.heartbeats];
    let refused = Member::join(c1, 9, "during-redis-outage", room);
    assert!(
        refused.is_err(),
        "a login while Redis is down must be refused"
    );
    let t = Instant::now();
    let (code, v) = call(http, "POST", "/goim/push/keys?operation=1000&keys=a1", b"x");
    let took = t.elapsed();
    assert_eq!(code, -500, "{v}");
    assert!(
        took < Duration::from_secs(2),
        "push answered after {took:?}"
    );
    a1.pump(Duration::from_secs(2));
    b2.pump(Duration::from_millis(100));
    assert!(
        !a1.closed && !b2.closed,
        "connections must outlive a Redis outage"
    );
    assert!(
        a1.heartbeats > hb[0] && b2.heartbeats > hb[1],
        "heartbeats answered during the outage"
    );
    phase(
        t0,
        &format!(
            "Redis down: login refused, push -500 in {took:?}, existing connections heartbeating"
        ),
    );
    redis.resume();
    let mut late = None;
    eventually("logins work again after Redis returns", || {
        late = Member::join(c1, 9, "after-redis", room).ok();
        late.is_some()
    });
    // Sessions lost with Redis come back with the next renewal (session_renew).
    let mut n = 0;
    eventually("key pushes reach a session that was renewed", || {
        n += 1;
        call(
            http,
            "POST",
            "/goim/push/keys?operation=1000&keys=a1",
            format!("back-{n}").as_bytes(),
        )
        .0 == 0
            && {
                a1.pump(Duration::from_millis(300));
                !a1.with_prefix("back-").is_empty()
            }
    });
    phase(t0, "Redis back: logins and key pushes work again");
    drop(late);

    // --- broker down: the push answers an error within 2 s; nothing reported accepted is lost
    broker.stop();
    let t = Instant::now();
    let (code, v) = call(
        http,
        "POST",
        "/goim/push/room?operation=1000&type=live&room=7",
        b"lost?",
    );
    let took = t.elapsed();
    assert_ne!(code, 0, "{v}");
    assert!(
        took < Duration::from_secs(2),
        "push answered after {took:?}"
    );
    phase(
        t0,
        &format!("broker down: push answered {code} in {took:?}"),
    );
    broker.resume();
    let mut accepted = Vec::new();
    let mut i = 0;
    eventually("pushes accepted again after the broker returns", || {
        i += 1;
        let body = format!("k-{i}");
        let ok = call(
            http,
            "POST",
            "/goim/push/room?operation=1000&type=live&room=7",
            body.as_bytes(),
        )
        .0 == 0;
        if ok {
            accepted.push(body);
        }
        ok
    });
    for i in 0..10 {
        let body = format!("k-after-{i}");
        push(
            http,
            "/goim/push/room?operation=1000&type=live&room=7",
            &body,
        );
        accepted.push(body);
    }
    for m in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let ok = m.until(|m| accepted.iter().all(|s| m.got.contains(s)));
        assert!(
            ok,
            "{}: accepted pushes lost after the broker restart",
            m.key
        );
    }
    phase(
        t0,
        &format!(
            "broker back: all {} accepted pushes delivered to all 4",
            accepted.len()
        ),
    );

    // --- logic down: existing connections stay up
    logic.kill();
    let hb = a2.heartbeats;
    a2.pump(Duration::from_secs(2));
    assert!(
        !a2.closed && a2.heartbeats > hb,
        "connections must outlive logic"
    );
    assert!(
        Member::join(c2, 10, "no-logic", room).is_err(),
        "no login without logic"
    );
    logic.resume();
    let mut again = None;
    eventually("logins work again after logic returns", || {
        again = Member::join(c2, 10, "logic-back", room).ok();
        again.is_some()
    });
    drop(again);
    phase(
        t0,
        "logic down: connections kept, logins refused; back: logins work",
    );

    // --- comet1 killed: its clients reconnect to comet2 and are pushed to; stale sessions expire
    comet1.kill();
    assert!(
        a1.until(|m| m.closed) && b1.until(|m| m.closed),
        "comet1's clients see the close"
    );
    eventually("comet1 leaves the registry", || comets_listed(&["comet2"]));
    phase(
        t0,
        "comet1 killed: its connections closed, it left the registry within its TTL",
    );
    let mut a1 = join(c2, 1, "a1"); // b1 does not come back
    for i in 0..3 {
        push(
            http,
            "/goim/push/keys?operation=1000&keys=a1",
            &format!("moved-{i}"),
        );
    }
    let (code, v) = call(
        http,
        "POST",
        "/goim/push/mids?operation=1000&mids=1",
        b"mid-after",
    );
    assert_eq!(code, 0, "{v}");
    assert!(a1.until(|m| m.with_prefix("moved-").len() == 3 && m.got.contains(&"mid-after".to_string())));
    assert_exact(&a1, "moved-", &seq("moved-", 3));
    assert!(a2.until(|m| m.got.contains(&"mid-after".to_string())));
    phase(
        t0,
        "a1 reconnected to comet2: key and mid pushes reach it there",
    );
    let redis_addr = redis.addr;
    assert_eq!(redis_get(redis_addr, "key_a1").as_deref(), Some("comet2"));
    let start = Instant::now();
    eventually("b1's stale session expires", || {
        redis_get(redis_addr, "key_b1").is_none()
    });
    phase(
        t0,
        &format!(
            "b1 (gone with comet1) expired from Redis {:?} later",
            start.elapsed()
        ),
    );
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The Redis session and room-count stores against a real `redis-server` on a spare port:
//! goim's key layout read back with raw commands, the conditional delete, the heartbeat
//! rules, and what happens while Redis is down and after it returns.

use redis::AsyncCommands;
use starling_cluster::testkit;
use starling_logic::redis_store::{RedisOnline, RedisSessions};
use starling_logic::store::{OnlineStore, SessionStore, StoreError};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn config(r: &testkit::Daemon) -> starling_cluster::redis::Config {
    starling_cluster::redis::Config {
        url: r.url(),
        timeout: Duration::from_millis(300),
        expire: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn sessions_use_goims_layout_and_delete_only_their_own() {
    let r = testkit::Redis::start();
    let c = config(&r);
    let conn = starling_cluster::redis::connect(&c).unwrap();
    let mut raw = conn.clone();
    let s = RedisSessions::new(conn, c.expire);

    s.add(7, "k1", "comet-a").await.unwrap();
    s.add(7, "k2", "comet-b").await.unwrap();
    s.add(0, "guest", "comet-a").await.unwrap();
    // goim's layout, as a goim logic would read it.
    let v: String = raw.get("key_k1").await.unwrap();
    assert_eq!(v, "comet-a");
    let h: HashMap<String, String> = raw.hgetall("mid_7").await.unwrap();
    assert_eq!(
        h,
        HashMap::from([
            ("k1".into(), "comet-a".into()),
            ("k2".into(), "comet-b".into())
        ])
    );
    let ttl: i64 = raw.ttl("key_k1").await.unwrap();
    assert!((50..=60).contains(&ttl), "ttl {ttl}");
    // A guest (mid 0) has a key but no mid hash.
    assert!(!raw.exists::<_, bool>("mid_0").await.unwrap());

    assert_eq!(
        s.servers(&["k1".into(), "nope".into(), "guest".into()])
            .await
            .unwrap(),
        vec![Some("comet-a".into()), None, Some("comet-a".into())]
    );
    assert_eq!(
        s.servers(&["k2".into()]).await.unwrap(),
        vec![Some("comet-b".into())]
    );
    let mut keys = s.keys_of(&[7, 8]).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("k1".into(), "comet-a".into()),
            ("k2".into(), "comet-b".into())
        ]
    );

    // k1 moves to comet-c; the late disconnect from comet-a must not delete it.
    s.add(7, "k1", "comet-c").await.unwrap();
    assert!(!s.remove(7, "k1", "comet-a").await.unwrap());
    assert_eq!(
        s.servers(&["k1".into()]).await.unwrap(),
        vec![Some("comet-c".into())]
    );
    // A heartbeat from the old comet neither steals the key nor asks to re-add it.
    assert!(s.touch(7, "k1", "comet-a").await.unwrap());
    assert_eq!(
        s.servers(&["k1".into()]).await.unwrap(),
        vec![Some("comet-c".into())]
    );
    // The holder's disconnect removes both entries.
    assert!(s.remove(7, "k1", "comet-c").await.unwrap());
    assert!(!raw.exists::<_, bool>("key_k1").await.unwrap());
    let h: HashMap<String, String> = raw.hgetall("mid_7").await.unwrap();
    assert_eq!(h, HashMap::from([("k2".into(), "comet-b".into())]));
    // A heartbeat for a session that is gone says so (logic then adds it again).
    assert!(!s.touch(7, "k1", "comet-c").await.unwrap());
    // A heartbeat refreshes the TTL.
    let _: () = raw.expire("key_k2", 5).await.unwrap();
    assert!(s.touch(7, "k2", "comet-b").await.unwrap());
    let ttl: i64 = raw.ttl("key_k2").await.unwrap();
    assert!(ttl > 5, "ttl {ttl}");
}

#[tokio::test]
async fn room_counts_are_sharded_as_goim_and_replaced_whole() {
    let r = testkit::Redis::start();
    let c = config(&r);
    let conn = starling_cluster::redis::connect(&c).unwrap();
    let mut raw = conn.clone();
    let o = RedisOnline::new(conn, c.expire);
    let counts: HashMap<String, i32> = (0..100).map(|i| (format!("live://{i}"), i)).collect();
    o.put("comet-a", &counts).await.unwrap();
    let fields: HashMap<String, String> = raw.hgetall("ol_comet-a").await.unwrap();
    assert!(
        fields.len() > 1 && fields.len() <= 64,
        "{} fields",
        fields.len()
    );
    let room = "live://42";
    let field = (cityhasher::hash::<u32>(room.as_bytes()) % 64).to_string();
    let shard: serde_json::Value = serde_json::from_str(&fields[&field]).unwrap();
    assert_eq!(shard["server"], "comet-a");
    assert_eq!(shard["room_count"][room], 42);
    assert!(shard["updated"].as_i64().unwrap() > 1_700_000_000);

    // A later report replaces the whole hash: emptied rooms vanish.
    o.put("comet-a", &HashMap::from([("live://1".into(), 3)]))
        .await
        .unwrap();
    let got = o.get(&["comet-a".into(), "comet-b".into()]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].counts, HashMap::from([("live://1".into(), 3)]));
    assert!(got[0].age < Duration::from_secs(5));
}

#[tokio::test]
async fn calls_fail_within_the_deadline_while_redis_is_down_and_recover() {
    let mut r = testkit::Redis::start();
    let c = config(&r);
    let s = RedisSessions::new(starling_cluster::redis::connect(&c).unwrap(), c.expire);
    s.add(1, "k", "comet-a").await.unwrap();

    r.stop();
    let t = Instant::now();
    let e = s.servers(&["k".into()]).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let t = Instant::now();
    assert!(s.add(2, "k2", "comet-a").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    r.resume();
    // The data went with the server (no persistence); the store works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if s.add(3, "k3", "comet-a").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "store never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.servers(&["k3".into()]).await.unwrap(),
        vec![Some("comet-a".into())]
    );
}

/// Failed calls are counted by kind in the store's `DependencyErrors` (exported by a logic
/// node as `starling_logic_redis_errors_total{kind}`): a server that does not answer within
/// `redis.timeout` (`CLIENT PAUSE` holds every client's commands) is a timeout; a server
/// that is gone is an error; successful calls count nothing.
#[tokio::test]
async fn failed_calls_are_counted_by_kind() {
    use starling_cluster::metrics::ErrorKind::{Error, Timeout};
    let mut r = testkit::Redis::start();
    let c = config(&r);
    let s = RedisSessions::new(starling_cluster::redis::connect(&c).unwrap(), c.expire);
    let counts = |s: &RedisSessions| (s.errors().count(Timeout), s.errors().count(Error));
    s.add(1, "k", "comet-a").await.unwrap();
    assert_eq!(counts(&s), (0, 0));

    // Another client pauses the server for 5 × redis.timeout.
    let mut pauser = starling_cluster::redis::connect(&c).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut pauser)
        .await
        .unwrap();
    let e = s.servers(&["k".into()]).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(counts(&s), (1, 0), "{e:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.servers(&["k".into()]).await.is_err() {
        assert!(Instant::now() < deadline, "store never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (timeouts, errors) = counts(&s);
    assert_eq!(errors, 0);

    r.stop();
    assert!(s.servers(&["k".into()]).await.is_err());
    assert_eq!(
        counts(&s),
        (timeouts, 1),
        "a refused connection is an error"
    );
}

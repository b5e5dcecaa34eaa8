//! The comet registry against a real `redis-server`: entries appear, expire when their comet
//! stops renewing, and leave at once on a clean stop.

use starling_cluster::metrics::{DependencyErrors, ErrorKind};
use starling_cluster::registry::{self, CometMeta, Instance};
use starling_cluster::testkit::Redis;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

fn instance(host: &str, conns: usize) -> Instance {
    let meta = CometMeta {
        conns,
        ..Default::default()
    };
    Instance::comet(host, vec![format!("grpc://{host}:3109")], meta)
}

fn hosts(list: &[Instance]) -> Vec<&str> {
    list.iter().map(|i| i.hostname.as_str()).collect()
}

#[tokio::test]
async fn entries_expire_or_leave_and_watchers_follow() {
    let mut r = Redis::start();
    let config = starling_cluster::redis::Config {
        url: r.url(),
        ..Default::default()
    };
    let mut conn = starling_cluster::redis::connect(&config).unwrap();

    registry::publish(&mut conn, &instance("c1", 3), Duration::from_secs(60))
        .await
        .unwrap();
    registry::publish(&mut conn, &instance("c2", 0), Duration::from_millis(300))
        .await
        .unwrap();
    let list = registry::list(&mut conn).await.unwrap();
    assert_eq!(hosts(&list), ["c1", "c2"]);
    assert_eq!(list[0].grpc_addr(), Some("c1:3109"));
    assert_eq!(list[0].meta_num("conn_count"), Some(3.0));

    // c2 stops renewing: gone after its TTL, and dropped from the set too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hosts(&registry::list(&mut conn).await.unwrap()), ["c1"]);
    let members: Vec<String> = redis::AsyncCommands::smembers(&mut conn, "starling:comets")
        .await
        .unwrap();
    assert_eq!(members, ["c1"]);

    // A watcher sees a comet that keeps itself registered, and sees it leave on stop.
    let fast = registry::Config {
        interval: Duration::from_millis(100),
        ttl: Duration::from_secs(60),
    };
    let watch_errors = DependencyErrors::new();
    let seen = registry::watch(conn.clone(), fast.clone(), watch_errors.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (renewed, renew_errors) = (Arc::new(AtomicBool::new(false)), DependencyErrors::new());
    let keeper = tokio::spawn(registry::keep_registered_reporting(
        conn.clone(),
        fast,
        || instance("c3", 1),
        stop_rx,
        renewed.clone(),
        renew_errors.clone(),
    ));
    let until = |want: Vec<&'static str>| {
        let mut rx = seen.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if hosts(&rx.borrow_and_update()) == want {
                        return;
                    }
                    rx.changed().await.unwrap();
                }
            })
            .await
            .unwrap_or_else(|_| panic!("watcher never saw {want:?}"));
        }
    };
    until(vec!["c1", "c3"]).await;
    assert!(renewed.load(Relaxed), "renewing");
    let none = |e: &DependencyErrors| ErrorKind::ALL.map(|k| e.count(k)) == [0, 0];
    assert!(
        none(&watch_errors) && none(&renew_errors),
        "no error while Redis answers"
    );

    // Redis hung (SIGSTOP): the watcher's reads and the keeper's renewals time out (500 ms),
    // each counted as a timeout; the watcher keeps its last list, the keeper reports failing.
    r.freeze();
    let timeouts = |e: &DependencyErrors| e.count(ErrorKind::Timeout);
    tokio::time::timeout(Duration::from_secs(10), async {
        while timeouts(&watch_errors) == 0 || timeouts(&renew_errors) == 0 || renewed.load(Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("failed registry calls counted as timeouts");
    assert_eq!(hosts(&seen.borrow()), ["c1", "c3"], "the last list stands");
    r.thaw();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !renewed.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("renewing again after Redis is back");

    // A clean stop withdraws the entry at once, long before its 60 s TTL.
    stop_tx.send(true).unwrap();
    keeper.await.unwrap();
    until(vec!["c1"]).await;
}

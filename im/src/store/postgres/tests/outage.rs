//! PostgreSQL down (reference im.md §7.2 "store down"):
//! - killed (SIGKILL) while a node appends, then restarted on the same directory: calls answer
//!   `Unavailable` (no hang), nothing acknowledged is lost, and appends resume with contiguous
//!   seqs;
//! - hung (SIGSTOP, connections open but unanswered): calls answer `Unavailable` at their
//!   deadline and a write stores nothing.

use super::{PgConfig, PgStore};
use crate::store::contract::{self, text};
use crate::store::{Conv, ImStore, StoreError};
use starling_cluster::testkit::Postgres;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_answers_unavailable_and_loses_nothing_acknowledged() {
    let mut pg = Postgres::start();
    let url = pg.create_database();
    let (_clock, c) = contract::test_clock();
    let store = Arc::new(
        PgStore::open(PgConfig {
            url,
            pool_size: 4,
            timeout: Duration::from_secs(3),
            pool_wait: Duration::from_secs(3),
            clock: c,
        })
        .await
        .unwrap(),
    );
    let conv = Conv::p2p(1, 2);
    // A writer appends until the store refuses; it reports what was acknowledged.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let id = format!("m{i}");
                match store.append(text(conv, 1, &id, "x")).await {
                    Ok(a) => acked_tx.send((id, a.message.seq)).unwrap(),
                    Err(e) => return (id, e),
                }
            }
            unreachable!()
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 30 {
        acked.push(acked_rx.recv().await.unwrap());
    }
    pg.stop();
    let (failed_id, err) = writer.await.unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    while let Ok(a) = acked_rx.try_recv() {
        acked.push(a);
    }
    // While it is down every call answers Unavailable within the deadline.
    assert!(matches!(
        store.append(text(conv, 2, "down", "x")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.conversation(conv).await,
        Err(StoreError::Unavailable(_))
    ));

    pg.resume();
    // The failed send's retry: dedup resolves whether it had committed.
    let retried = store.append(text(conv, 1, &failed_id, "x")).await.unwrap();
    let last_acked = acked.last().unwrap().1;
    assert!(retried.message.seq == last_acked + 1, "{retried:?}");
    let after = store.append(text(conv, 1, "after", "x")).await.unwrap();
    assert_eq!(after.message.seq, last_acked + 2);
    let msgs = store.range(conv, 1, u64::MAX, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last_acked + 2).collect::<Vec<_>>(), "contiguous");
    for (id, seq) in &acked {
        let m = &msgs[*seq as usize - 1];
        assert_eq!(&m.client_msg_id, id, "acknowledged {id} at {seq} survived");
    }
}

/// A hung server (every PostgreSQL process stopped with SIGSTOP, its sockets open: nothing
/// refuses, nothing answers) must not hang the store: each call answers `Unavailable` when its
/// deadline ([`PgConfig::timeout`], `im.store_timeout`) passes, and a write commits nothing
/// (reference im.md §7.2 "store down: 503, nothing committed, nothing acknowledged"). The freeze
/// comes before the call, so the abandoned transaction never reached COMMIT: after the thaw it
/// is rolled back, and the same `client_msg_id` is stored as new at the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_answers_unavailable_at_the_deadline_and_stores_nothing() {
    let mut pg = Postgres::start();
    let url = pg.create_database();
    let (_clock, c) = contract::test_clock();
    let deadline = Duration::from_secs(1);
    let store = PgStore::open(PgConfig {
        url,
        pool_size: 1,
        timeout: deadline,
        pool_wait: deadline,
        clock: c,
    })
    .await
    .unwrap();
    let conv = Conv::p2p(1, 2);
    // The pool holds a live connection to the server about to hang.
    let first = store.append(text(conv, 1, "before", "x")).await.unwrap();
    assert_eq!(first.message.seq, 1);

    pg.freeze();
    // Without the deadline the call never returns; 30 × the deadline turns that into a failure.
    let net = deadline * 30;
    let started = std::time::Instant::now();
    let hung = tokio::time::timeout(net, store.append(text(conv, 1, "hung", "x")))
        .await
        .expect("the append did not answer while the server hung: no deadline");
    assert!(
        matches!(&hung, Err(StoreError::Unavailable(why)) if why.contains("deadline")),
        "{hung:?}"
    );
    assert!(
        started.elapsed() >= deadline,
        "answered before its deadline"
    );
    let read = tokio::time::timeout(net, store.conversation(conv))
        .await
        .expect("the read did not answer while the server hung: no deadline");
    assert!(
        matches!(&read, Err(StoreError::Unavailable(why)) if why.contains("deadline")),
        "{read:?}"
    );

    pg.thaw();
    // The retry takes the conversation's lock, which the abandoned transaction (if the server
    // got as far as granting it) releases by its rollback: it finds no earlier copy.
    let retried = store.append(text(conv, 1, "hung", "x")).await.unwrap();
    assert_eq!(
        (retried.message.seq, retried.duplicate),
        (2, false),
        "the hung append stored nothing"
    );
    let msgs = store.range(conv, 1, u64::MAX, usize::MAX).await.unwrap();
    let ids: Vec<(u64, &str)> = msgs
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_str()))
        .collect();
    assert_eq!(ids, [(1, "before"), (2, "hung")]);
}

//! PostgreSQL killed (SIGKILL) while a node appends, then restarted on the same directory:
//! calls answer `Unavailable` (no hang), nothing acknowledged is lost, and appends resume
//! with contiguous seqs (reference im.md §7.2 "store down").

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

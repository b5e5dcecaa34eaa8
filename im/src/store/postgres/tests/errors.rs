//! [`PgStore::errors`] (exported as `starling_im_postgres_errors_total{kind}`): a call past
//! its deadline is a `timeout`, a server that is gone an `error`, and a request PostgreSQL
//! answered (a refusal such as `BadRequest`) is not counted. A call that finds every pooled
//! connection busy past `pool_wait` is refused at once as `Overloaded` (issue 15, soak).

use super::{PgConfig, PgStore};
use crate::store::contract::{self, text};
use crate::store::{Conv, ImStore, StoreError};
use starling_cluster::metrics::ErrorKind::{Error, Timeout};
use starling_cluster::testkit::Postgres;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_are_counted_by_kind() {
    let mut pg = Postgres::start();
    let url = pg.create_database();
    let (_clock, c) = contract::test_clock();
    let store = PgStore::open(PgConfig {
        url: url.clone(),
        pool_size: 2,
        timeout: Duration::from_secs(1),
        pool_wait: Duration::from_secs(1),
        clock: c,
    })
    .await
    .unwrap();
    let counts = || (store.errors().count(Timeout), store.errors().count(Error));
    let conv = Conv::p2p(1, 2);
    store.append(text(conv, 1, "m1", "x")).await.unwrap();
    assert_eq!(counts(), (0, 0));

    // A refusal is PostgreSQL answering: not a dependency error.
    let refused = store.append(text(Conv::p2p(1, 1), 1, "self", "x")).await;
    assert!(
        matches!(refused, Err(StoreError::BadRequest(_))),
        "{refused:?}"
    );
    assert_eq!(counts(), (0, 0));

    // Another session holds the conversations' table: the append waits past its deadline.
    let lock = Lock::conversations(&url).await;
    let late = store.append(text(conv, 1, "m2", "x")).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    assert_eq!(counts(), (1, 0), "{late:?}");
    lock.release().await;

    pg.stop();
    let gone = store.append(text(conv, 1, "m3", "x")).await;
    assert!(matches!(gone, Err(StoreError::Unavailable(_))), "{gone:?}");
    let (timeouts, errors) = counts();
    assert_eq!(
        (timeouts, errors),
        (1, 1),
        "a refused connection is an error: {gone:?}"
    );
}

/// Every pooled connection busy (here the one connection waits on a table another session
/// locked): a call waits `pool_wait` for a connection, not the whole deadline, and answers
/// `Overloaded` with nothing done; once the connection frees up, calls are served again. A
/// queue in front of the database that is shorter than comet's deadline is what lets a node
/// under overload answer the calls it serves in time (bench/RESULTS.md, "Soak").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_finds_the_pool_busy_past_pool_wait_is_overloaded() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let (_clock, c) = contract::test_clock();
    let store = std::sync::Arc::new(
        PgStore::open(PgConfig {
            url: url.clone(),
            pool_size: 1,
            timeout: Duration::from_secs(30),
            pool_wait: Duration::from_millis(100),
            clock: c,
        })
        .await
        .unwrap(),
    );
    let conv = Conv::p2p(1, 2);
    store.append(text(conv, 1, "m1", "x")).await.unwrap();

    // Another session holds the conversations' table: an append takes the pool's one
    // connection and waits on the lock (within its 30-s deadline).
    let lock = Lock::conversations(&url).await;
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move { store.append(text(conv, 1, "m2", "x")).await })
    };
    // Once the append holds the connection, a read finds the pool busy.
    let busy = loop {
        match store.contact(1, 2).await {
            Err(StoreError::Overloaded(why)) => break why,
            // Before the append took the connection the read is served.
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(busy.contains("pool"), "{busy}");
    assert!(!blocked.is_finished(), "the append still waits on the lock");
    assert_eq!(store.errors().count(Timeout), 1, "counted as a timeout");

    lock.release().await;
    let m2 = blocked.await.unwrap().unwrap();
    assert_eq!(
        m2.message.seq, 2,
        "the append waiting on the lock is served"
    );
    let m3 = store.append(text(conv, 1, "m3", "x")).await.unwrap();
    assert_eq!(m3.message.seq, 3, "and calls after it");
}

/// Another session holding `im_conversation` locked (ACCESS EXCLUSIVE) until released.
struct Lock {
    release: tokio::sync::oneshot::Sender<()>,
    session: tokio::task::JoinHandle<()>,
}

impl Lock {
    async fn conversations(url: &str) -> Lock {
        let (mut holder, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let session = tokio::spawn(async move {
            let conn = tokio::spawn(conn);
            let tx = holder.transaction().await.unwrap();
            tx.batch_execute("LOCK TABLE im_conversation IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = released.await;
            tx.rollback().await.unwrap();
            drop(holder);
            let _ = conn.await;
        });
        locked.await.unwrap();
        Lock { release, session }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.session.await.unwrap();
    }
}

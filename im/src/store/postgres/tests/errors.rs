//! [`PgStore::errors`] (exported as `starling_im_postgres_errors_total{kind}`): a call past
//! its deadline is a `timeout`, a server that is gone an `error`, and a request PostgreSQL
//! answered (a refusal such as `BadRequest`) is not counted.

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
    let (mut holder, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE im_conversation IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let late = store.append(text(conv, 1, "m2", "x")).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    assert_eq!(counts(), (1, 0), "{late:?}");
    tx.rollback().await.unwrap();
    drop(holder);
    let _ = conn.await;

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

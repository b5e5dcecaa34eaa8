//! The PostgreSQL store's tests, on a real server (`starling_cluster::testkit::Postgres`,
//! Debian's binaries; `tools/test.sh` installs them, and without them these tests fail
//! saying so):
//! - `rules`: the shared contract suite and the concurrent-append property, each test on its
//!   own database of one server shared by this test binary;
//! - `race`: two stores (two logic nodes) appending to one conversation at once;
//! - `outage`: the server killed under load and restarted, and hung (SIGSTOP) under a call;
//! - `errors`: failed calls counted by kind (timeout, error), refusals not counted;
//! - here: concurrent opens (migrations under the advisory lock), the epoch.

mod errors;
mod outage;
mod race;

use super::{PgConfig, PgStore};
use crate::store::contract::{self, H};
use crate::store::{Conv, ImStore};
use starling_cluster::testkit::Postgres;
use std::sync::Arc;
use std::time::Duration;

/// A store on a fresh database of the shared server, with the test clock.
pub(super) async fn open_on(url: &str) -> (PgStore, Arc<std::sync::atomic::AtomicI64>) {
    let (clock, c) = contract::test_clock();
    let store = PgStore::open(PgConfig {
        url: url.into(),
        pool_size: 4,
        timeout: Duration::from_secs(20),
        pool_wait: Duration::from_secs(20),
        clock: c,
    })
    .await
    .unwrap();
    (store, clock)
}

/// A fresh database on the shared server.
pub(super) fn fresh_db() -> String {
    Postgres::shared().create_database()
}

mod rules {
    use super::*;
    use crate::store::contract::prop;
    use proptest::prelude::*;

    async fn open() -> H {
        let (store, clock) = open_on(&fresh_db()).await;
        H {
            store: Arc::new(store),
            clock,
            _keep: Box::new(()),
        }
    }

    contract::contract_tests!(open);

    proptest! {
        // Each case makes a database: fewer cases than the embedded store's 24.
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        #[test]
        fn concurrent_appends_keep_seqs_contiguous_and_dedup_exact(ops in prop::ops()) {
            prop::run(ops, open);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_opening_together_migrate_once_and_share_the_epoch() {
    let url = fresh_db();
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { open_on(&url).await.0 })
    });
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap());
    }
    let epoch = stores[0].epoch();
    assert_ne!(epoch, 0);
    assert!(stores.iter().all(|s| s.epoch() == epoch));
    // A later open keeps the schema and the epoch; the data is there.
    let c = Conv::p2p(1, 2);
    stores[1]
        .append(contract::text(c, 1, "a", "x"))
        .await
        .unwrap();
    drop(stores);
    let (again, _) = open_on(&url).await;
    assert_eq!(again.epoch(), epoch);
    assert_eq!(again.conversation(c).await.unwrap().unwrap().last_seq, 1);
}

#[tokio::test]
async fn a_bad_url_or_an_absent_server_is_refused_clearly() {
    let bad = PgStore::open(PgConfig::new("postgres://[::1")).await;
    assert!(matches!(bad, Err(crate::store::StoreError::BadRequest(_))));
    let port = starling_cluster::testkit::spare_port([127, 0, 0, 1].into());
    let gone = PgStore::open(PgConfig {
        timeout: Duration::from_secs(2),
        pool_wait: Duration::from_secs(2),
        ..PgConfig::new(format!("postgres://postgres@127.0.0.1:{port}/x"))
    })
    .await;
    assert!(matches!(
        gone,
        Err(crate::store::StoreError::Unavailable(_))
    ));
}

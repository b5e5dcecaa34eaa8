//! Schema migrations and the store epoch, at open (reference im.md §6.3).
//!
//! The migrations are `migrations/V<n>__<name>.sql`, embedded at build time and applied by
//! refinery (its history table: `refinery_schema_history`). refinery takes no lock of its own,
//! so the whole step runs under a session-level advisory lock on a dedicated connection:
//! logic nodes that start together apply each migration once, one after the other. The
//! highest version is also written to `im_meta('schema')`, the key the design names.

use super::{Error, R};
use crate::store::StoreError;
use tokio_postgres::NoTls;

refinery::embed_migrations!("src/store/postgres/migrations");

/// The advisory lock key of the migration step ("STARLING" in ASCII).
const LOCK_KEY: i64 = 0x5354_4152_4c49_4e47;

/// Applies the pending migrations and returns the store epoch (made on the first open: a
/// random non-zero u64, stored as its bit pattern in a bigint).
pub(super) async fn run(pg: &tokio_postgres::Config) -> R<u64> {
    let (mut client, conn) = pg.connect(NoTls).await?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "IM store: migration connection ended");
        }
    });
    let out = locked(&mut client).await;
    // Ending the session releases the advisory lock whatever happened above.
    drop(client);
    let _ = conn.await;
    out
}

async fn locked(client: &mut tokio_postgres::Client) -> R<u64> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let runner = migrations::runner();
    let latest = runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    let report = runner
        .run_async(client)
        .await
        .map_err(|e| StoreError::Unavailable(format!("postgres: migration failed: {e}")))?;
    for m in report.applied_migrations() {
        tracing::info!(
            version = m.version(),
            name = m.name(),
            "IM store: migration applied"
        );
    }
    client
        .execute(
            "INSERT INTO im_meta (k, v) VALUES ('schema', $1) \
             ON CONFLICT (k) DO UPDATE SET v = GREATEST(im_meta.v, EXCLUDED.v)",
            &[&latest],
        )
        .await?;
    let fresh = crate::store::embedded::new_epoch() as i64;
    client
        .execute(
            "INSERT INTO im_meta (k, v) VALUES ('epoch', $1) ON CONFLICT (k) DO NOTHING",
            &[&fresh],
        )
        .await?;
    let epoch: i64 = client
        .query_one("SELECT v FROM im_meta WHERE k = 'epoch'", &[])
        .await?
        .get(0);
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    if epoch == 0 {
        return Err(Error::Store(StoreError::Unavailable(
            "postgres: im_meta holds a zero epoch".into(),
        )));
    }
    Ok(epoch as u64)
}

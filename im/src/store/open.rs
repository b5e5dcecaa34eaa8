//! Opening the store the `[im]` configuration names (reference im.md §6.2, §6.3): shared by
//! the all-in-one `starling` binary and the separate `logic` binary.

use super::embedded::{EmbeddedConfig, EmbeddedStore};
use super::postgres::{PgConfig, PgStore};
use super::{Durability, ImStore, StoreError};
use crate::config::{Config, DurabilitySetting, StoreKind};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded store's directory is locked by another process, cannot be created, or
    /// holds a damaged record.
    #[error("im.store = \"embedded\" at {path}: {source}")]
    Embedded { path: PathBuf, source: StoreError },
    /// PostgreSQL is unreachable within `im.store_timeout`, the URL does not parse, or a
    /// migration failed.
    #[error("im.store = \"postgres\": {0}")]
    Postgres(StoreError),
}

/// Opens the embedded store (under `config.path`, warning loudly when `durability` is
/// `buffer`) or PostgreSQL (at `config.postgres_url`, migrating its schema) per
/// `config.store`, and logs the store epoch. Must run inside a tokio runtime: the PostgreSQL
/// store's connections live on it.
pub async fn open(config: &Config) -> Result<Arc<dyn ImStore>, OpenError> {
    let store: Arc<dyn ImStore> = match config.store {
        StoreKind::Embedded => {
            let durability = match config.durability {
                DurabilitySetting::Sync => Durability::Sync,
                DurabilitySetting::Buffer => {
                    tracing::warn!(
                        "im.durability = \"buffer\": acknowledged messages survive a crash of \
                         this process but not of the machine; for benchmarks only"
                    );
                    Durability::Buffer
                }
            };
            let shown = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
            let store = EmbeddedStore::open(EmbeddedConfig {
                durability,
                batch_max: config.store_batch_max,
                threads: config.store_threads,
                ..EmbeddedConfig::new(&config.path)
            })
            .map_err(|source| OpenError::Embedded {
                path: shown.clone(),
                source,
            })?;
            tracing::info!(path = %shown.display(), epoch = store.epoch(), "IM store open (embedded)");
            Arc::new(store)
        }
        StoreKind::Postgres => {
            let store = PgStore::open(PgConfig {
                pool_size: config.postgres_pool,
                timeout: config.store_timeout,
                pool_wait: config.postgres_pool_wait,
                ..PgConfig::new(config.postgres_url.clone())
            })
            .await
            .map_err(OpenError::Postgres)?;
            tracing::info!(
                pool = config.postgres_pool,
                timeout = ?config.store_timeout,
                epoch = store.epoch(),
                "IM store open (postgres)"
            );
            Arc::new(store)
        }
    };
    Ok(store)
}

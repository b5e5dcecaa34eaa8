//! The `logic` binary's library: logic as its own process ([`starling_logic::node`]: sessions
//! and room counts in Redis, pushes to Kafka, gRPC for comets) with the IM layer installed on
//! it when `[im] enabled` (reference im.md §7). The IM device table lives in Redis
//! (`starling:im:dev:{mid}`, [`starling_im::devices::RedisDevices`]) so any number of logic
//! nodes share it; IM's pushes (messages, events, kicks) go through the node's Kafka producer
//! to job and the comet the device table names.
//!
//! This lives apart from `starling-logic` because the IM crate depends on that one, and apart
//! from the all-in-one because the node needs librdkafka, which the all-in-one does without.
//!
//! # Layout
//! - [`Config`]: the file (`conf/logic.toml`): the node's tables and `[im]`.
//! - [`run`]: the node with IM; [`open_store`]: the one place the IM store is opened.

use serde::{Deserialize, Serialize};
use starling_cluster::{boot, kafka, redis, registry};
use starling_im::Im;
use starling_im::devices::{DeviceTable, RedisDevices};
use starling_im::store::ImStore;
use starling_logic::node::{self, Extension, Grpc, NodeConfig, NodeError, Parts};
use std::sync::Arc;

/// `conf/logic.toml`: [`NodeConfig`]'s tables and the IM layer's `[im]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub logic: starling_logic::Config,
    pub grpc: Grpc,
    pub redis: redis::Config,
    pub kafka: kafka::Config,
    pub registry: registry::Config,
    /// IM (off unless enabled): the same table as the all-in-one's.
    pub im: starling_im::Config,
    pub log: boot::Log,
}

impl boot::ConfigFile for Config {
    fn validate(&self) -> Result<(), boot::Invalid> {
        self.logic.validate()?;
        self.im.validate()?;
        // comet closes a connection silent for heartbeat × heartbeat_max; its session and IM
        // device entry must outlive that, or a connection that is still open becomes
        // unreachable: pushes to it are dropped until its next heartbeat puts the entry
        // back (the issue-15 CI failure: 6s TTL under a 10s close). goim's defaults keep
        // 30m over 2 × 4m.
        let node = &self.logic.node;
        let close = node.heartbeat.saturating_mul(node.heartbeat_max);
        if self.redis.expire <= close {
            return Err(format!(
                "redis.expire: {:?} is not above logic.node.heartbeat × heartbeat_max ({close:?}): a silent connection's session and device entry would expire while comet still holds it, and pushes to it would be lost",
                self.redis.expire,
            )
            .into());
        }
        Ok(())
    }
}

impl Config {
    /// The node's own tables (everything but `[im]`).
    pub fn node(&self) -> NodeConfig {
        NodeConfig {
            logic: self.logic.clone(),
            grpc: self.grpc.clone(),
            redis: self.redis.clone(),
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            log: self.log.clone(),
        }
    }
}

/// Opens the IM store `config` names ([`starling_im::store::open`]). The embedded store
/// (fjall) belongs to one process: with it, run a single logic node (design §6.2; several need
/// PostgreSQL), which is logged.
///
/// Errors: the store cannot be opened (its directory is locked by another process,
/// PostgreSQL unreachable within `im.store_timeout`, a migration failed).
pub async fn open_store(
    config: &starling_im::Config,
) -> Result<Arc<dyn ImStore>, starling_im::store::OpenError> {
    if config.store == starling_im::config::StoreKind::Embedded {
        tracing::warn!(
            "im.store = \"embedded\" on a logic node: the store belongs to this process, \
             so run one logic node only; several logic nodes need PostgreSQL (design §6.2)"
        );
    }
    starling_im::store::open(config).await
}

/// Installs IM on the node: its connect hook and op handlers on logic, the device table in
/// the node's Redis, pushes through the node's Kafka producer, `/im/v1` on the HTTP port and
/// IM's metrics on `/metrics` and its store on `/readyz`.
async fn install_im(config: starling_im::Config, parts: Parts) -> Result<Extension, boot::Invalid> {
    let store = open_store(&config).await?;
    let devices = DeviceTable::Redis(
        RedisDevices::new(parts.redis, parts.expire).with_errors(parts.redis_errors.clone()),
    );
    let im = Im::with_devices(config, store, parts.sink, devices);
    im.install(&parts.logic);
    im.register_metrics(&parts.metrics);
    let store = im.store.clone();
    parts.ready.check("im_store", move || {
        let store = store.clone();
        // Any read reaches PostgreSQL (the embedded store is open as long as we run).
        async move { store.group(0).await.map(|_| ()).map_err(|e| e.to_string()) }
    });
    Ok(Extension {
        // starling.im.v1.Admin beside goim.logic.Logic; none unless im.admin_token is set.
        grpc: starling_im::admin::grpc::service(im.clone()).map(tonic::service::Routes::new),
        // The /im/v1 management API; no routes unless im.admin_token is set.
        routes: Some(starling_im::admin::router(im, parts.logic.clone())),
    })
}

/// Serves until `shutdown` resolves: [`node::run_with`], with IM when `[im] enabled`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let im = config.im.clone();
    node::run_with(
        config.node(),
        shutdown,
        Box::new(move |parts| {
            Box::pin(async move {
                if im.enabled {
                    install_im(im, parts).await
                } else {
                    Ok(Extension::default())
                }
            })
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot::ConfigFile;
    use std::time::Duration;

    #[test]
    fn a_session_ttl_not_above_the_heartbeat_close_is_refused() {
        let mut c = Config::default();
        assert!(c.validate().is_ok(), "goim's defaults: 30m over 2 × 4m");
        c.logic.node.heartbeat = Duration::from_secs(2);
        c.logic.node.heartbeat_max = 5;
        c.redis.expire = Duration::from_secs(10);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "redis.expire: 10s is not above logic.node.heartbeat × heartbeat_max (10s)"
            ),
            "{err}"
        );
        c.redis.expire = Duration::from_secs(11);
        assert!(c.validate().is_ok());
    }
}

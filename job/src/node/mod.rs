//! job as its own process (the `job` binary): consumes goim's `PushMsg`s from Kafka with a
//! consumer group, pushes them to the comets listed in the Redis registry over gRPC, and
//! stores each offset only after its message (and every earlier one of its partition) was
//! handed to every target comet. `conf/job.toml` documents every key.

mod grpc;
pub mod offsets;
pub mod ops;

use crate::{Delivery, Job};
use offsets::Offsets;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use starling_cluster::metrics::Metrics;
use starling_cluster::{boot, health, kafka, redis, registry};
use starling_proto::grpc::logic::PushMsg;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use grpc::GrpcComet;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub job: crate::Config,
    pub kafka: kafka::Config,
    pub redis: redis::Config,
    pub registry: registry::Config,
    pub comets: Comets,
    /// `/metrics`, `/healthz`, `/readyz` (off unless `bind` is set).
    pub metrics: health::Config,
    pub log: boot::Log,
}

impl boot::ConfigFile for NodeConfig {
    fn validate(&self) -> Result<(), boot::Invalid> {
        Ok(self.job.validate()?)
    }
}

/// How job calls comets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Comets {
    /// Deadline of one call (a room batch returns once the comet has written it).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed call, 100 ms, 200 ms, 400 ms ... apart.
    pub retries: u32,
}

impl Default for Comets {
    fn default() -> Self {
        Comets {
            timeout: Duration::from_secs(5),
            retries: 3,
        }
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Messages handed to the dispatcher and not yet to comets, before consuming waits.
const IN_FLIGHT: usize = 4096;

/// Keeps job's comet clients in step with the registry. A draining comet (listed offline)
/// is still pushed to: its remaining clients are served until it closes them.
async fn follow_registry(
    job: Arc<Job>,
    mut rx: tokio::sync::watch::Receiver<Arc<Vec<registry::Instance>>>,
    config: Comets,
    mut known: HashMap<String, String>,
) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let list = rx.borrow_and_update().clone();
        known = apply(&job, &list, known, &config);
    }
}

/// Adds the comets that appeared (or moved) and removes those that left; returns the new
/// hostname → address map.
fn apply(
    job: &Job,
    list: &[registry::Instance],
    known: HashMap<String, String>,
    config: &Comets,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    for i in list.iter() {
        let Some(addr) = i.grpc_addr() else { continue };
        seen.insert(i.hostname.clone(), addr.to_string());
        if known.get(&i.hostname).map(String::as_str) == Some(addr) {
            continue;
        }
        match GrpcComet::new(&i.hostname, addr, config.timeout, config.retries) {
            Ok(c) => {
                info!(server = %i.hostname, %addr, "comet added");
                job.set_comet(&i.hostname, Arc::new(c));
            }
            Err(e) => warn!(server = %i.hostname, %addr, error = %e, "bad comet address"),
        }
    }
    for gone in known.keys().filter(|k| !seen.contains_key(*k)) {
        info!(server = %gone, "comet removed");
        job.remove_comet(gone);
    }
    seen
}

fn consumer(config: &kafka::Config) -> Result<StreamConsumer, NodeError> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.brokers.join(","))
        .set("group.id", &config.group)
        // Offsets are stored by hand once handed over, and committed every second.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // A new group starts at the oldest message: nothing logic acknowledged before job
        // first ran is skipped (goim's sarama default starts at the newest).
        .set("auto.offset.reset", "earliest")
        // A job that died leaves the group after this; until then its partitions wait.
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().max(1).to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout.as_millis() / 3).max(1).to_string(),
        )
        .create()?;
    c.subscribe(&[&config.topic])?;
    Ok(c)
}

/// Consumes until `shutdown` resolves, then stops taking messages, waits (at most 5 s) for
/// those in flight and commits what was handed over.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let conn = redis::connect(&config.redis)?;
    let job = Arc::new(Job::new(config.job.clone()));
    let kafka_ops = Arc::new(ops::KafkaOps::default());
    let ready = health::Readiness::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics.bind {
        let metrics = Metrics::new();
        job.register_metrics(&metrics);
        kafka_ops.register(&metrics);
        starling_cluster::metrics::register_runtime(&metrics, tokio::runtime::Handle::current());
        kafka_ops.checks(&ready, conn.clone(), config.kafka.topic.clone());
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.changed().await;
        };
        health::serve(
            addr,
            config.metrics.limits(),
            metrics,
            ready.clone(),
            stopped,
        )
        .await
        .map_err(|source| NodeError::Metrics { addr, source })?;
    }
    // Nothing is consumed before the comets are known: a room message routed to an empty
    // comet set would be handed to nobody and its offset stored.
    let mut comets = registry::watch_or_when(
        conn,
        config.registry.clone(),
        job.reread(),
        kafka_ops.redis_errors.clone(),
    );
    info!("waiting for the comet registry");
    if comets.changed().await.is_err() {
        return Ok(());
    }
    let first = comets.borrow_and_update().clone();
    let known = apply(&job, &first, HashMap::new(), &config.comets);
    tokio::spawn(follow_registry(
        job.clone(),
        comets,
        config.comets.clone(),
        known,
    ));
    let (tx, rx) = mpsc::channel::<Delivery>(IN_FLIGHT);
    let dispatcher = tokio::spawn(job.run(rx));

    let consumer = Arc::new(consumer(&config.kafka)?);
    kafka_ops.set_consumer(consumer.clone());
    let lag = tokio::spawn(kafka_ops.clone().measure_lag(config.kafka.topic.clone()));
    let topic = config.kafka.topic.clone();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    let mut offsets = Offsets::default();
    let store = |offsets: &mut Offsets, consumer: &StreamConsumer, p: i32, off: i64| {
        if let Some(upto) = offsets.done(p, off) {
            // librdkafka commits upto + 1: the next message to read.
            if let Err(e) = consumer.store_offset(&topic, p, upto) {
                debug!(partition = p, error = %e, "offset not stored (partition revoked?)");
            }
        }
    };
    info!(topic = %config.kafka.topic, group = %config.kafka.group, "job running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((p, off)) = done_rx.recv() => store(&mut offsets, &consumer, p, off),
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        kafka_ops.kafka_errors.record(ops::kafka_error_kind(&e));
                        warn!(error = %e, "kafka consume failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (p, off) = (m.partition(), m.offset());
                offsets.received(p, off);
                let done_tx = done_tx.clone();
                let produced_ms = m.timestamp().to_millis();
                let done: crate::Done = Box::new(move || {
                    let _ = done_tx.send((p, off));
                });
                match PushMsg::decode(m.payload().unwrap_or_default()) {
                    Ok(msg) => {
                        let d = Delivery { msg, done: Some(done), produced_ms };
                        if tx.send(d).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(partition = p, offset = off, error = %e, "undecodable PushMsg skipped");
                        done();
                    }
                }
            }
        }
    }
    ready.set_draining();
    info!(in_flight = offsets.in_flight(), "job stopping");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while offsets.in_flight() > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some((p, off))) => store(&mut offsets, &consumer, p, off),
            _ => break,
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        warn!(error = %e, "final commit failed");
    }
    drop(tx);
    dispatcher.abort();
    lag.abort();
    let _ = stop_tx.send(true);
    Ok(())
}

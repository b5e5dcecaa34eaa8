//! What the `job` binary shows an operator: Kafka consumer lag per partition (committed
//! position against the partition's high watermark, read every [`LAG_EVERY`]), Kafka errors,
//! and the readiness checks of `/readyz` (consumer assigned and brokers reachable, Redis
//! answering).

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::Offset;
use starling_cluster::health::{CheckFuture, Readiness};
use starling_cluster::metrics::{self, Histogram, Metrics};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::debug;

/// How often the lag is measured (each read asks the brokers for the watermarks).
pub const LAG_EVERY: Duration = Duration::from_secs(5);

/// The deadline of one broker query (watermarks, metadata).
const BROKER_TIMEOUT: Duration = Duration::from_secs(1);

/// The consumer once it exists, and what was measured on it.
pub struct KafkaOps {
    consumer: Mutex<Option<Arc<StreamConsumer>>>,
    /// (partition, messages behind the high watermark), from the last measure.
    lag: Mutex<Vec<(i32, i64)>>,
    /// Consume calls that failed (broker down, say).
    pub errors: AtomicU64,
    /// Seconds from a record's produce to job being through with it at every comet it
    /// targets ([`KafkaOps::through`]).
    delivery_seconds: Histogram,
}

impl Default for KafkaOps {
    fn default() -> Self {
        KafkaOps {
            consumer: Mutex::default(),
            lag: Mutex::default(),
            errors: AtomicU64::default(),
            delivery_seconds: metrics::latency_histogram(),
        }
    }
}

impl KafkaOps {
    /// Observes a message job is through with (every comet answered, gave up or was
    /// dropped) that the producer stamped at `produced_ms` (the record's CreateTime, Unix
    /// milliseconds on logic's clock; hosts' clock skew adds to it, and a negative
    /// difference counts as 0).
    pub fn through(&self, produced_ms: i64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.delivery_seconds
            .observe((now_ms - produced_ms).max(0) as f64 / 1000.0);
    }

    pub fn set_consumer(&self, c: Arc<StreamConsumer>) {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }

    fn consumer(&self) -> Option<Arc<StreamConsumer>> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers `starling_job_kafka_lag{partition}`, `starling_job_kafka_errors_total` and
    /// the histogram `starling_job_delivery_seconds`.
    pub fn register(self: &Arc<Self>, m: &Metrics) {
        m.register(
            "starling_job_delivery_seconds",
            "Seconds from logic's produce (the Kafka record's CreateTime, logic's clock) to job \
             being through with the message at every comet it targets (answered, given up or \
             dropped): Kafka, job's queues and the comet calls.",
            self.delivery_seconds.clone(),
        );
        let s = self.clone();
        m.collect(move |enc| {
            metrics::counter(
                enc,
                "starling_job_kafka_errors",
                "Kafka consume calls that failed.",
                s.errors.load(Relaxed),
            )?;
            let lag = s.lag.lock().unwrap_or_else(|e| e.into_inner()).clone();
            metrics::gauges(
                enc,
                "starling_job_kafka_lag",
                "Messages behind the partition's high watermark (job's position), per \
                 assigned partition, measured every 5 s.",
                lag.iter()
                    .map(|(p, l)| ([("partition", p.to_string())], *l)),
            )
        });
    }

    /// Measures the lag every [`LAG_EVERY`] (on the blocking pool) until the task is dropped.
    pub async fn measure_lag(self: Arc<Self>, topic: String) {
        loop {
            tokio::time::sleep(LAG_EVERY).await;
            let Some(c) = self.consumer() else { continue };
            let topic = topic.clone();
            let lag = tokio::task::spawn_blocking(move || lag_of(&c, &topic)).await;
            if let Ok(lag) = lag {
                *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
            }
        }
    }

    /// `/readyz` checks: `kafka` (partitions assigned, brokers answer) and `redis`.
    pub fn checks(
        self: &Arc<Self>,
        ready: &Readiness,
        redis: starling_cluster::redis::ConnectionManager,
        topic: String,
    ) {
        let s = self.clone();
        ready.check("kafka", move || -> CheckFuture {
            let (c, topic) = (s.consumer(), topic.clone());
            Box::pin(async move {
                let c = c.ok_or("consumer not started (waiting for the comet registry)")?;
                tokio::task::spawn_blocking(move || {
                    c.fetch_metadata(Some(&topic), BROKER_TIMEOUT)
                        .map_err(|e| format!("brokers: {e}"))?;
                    let assigned = c.assignment().map_err(|e| e.to_string())?;
                    if assigned.count() == 0 {
                        return Err("no partition assigned".to_string());
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?
            })
        });
        ready.check("redis", starling_cluster::health::redis_ping(redis));
    }
}

/// Per assigned partition: high watermark minus the consumer's position (the whole
/// partition when nothing was read yet).
fn lag_of(c: &StreamConsumer, topic: &str) -> Vec<(i32, i64)> {
    let Ok(positions) = c.position() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in positions.elements_for_topic(topic) {
        let p = e.partition();
        let (low, high) = match c.fetch_watermarks(topic, p, BROKER_TIMEOUT) {
            Ok(w) => w,
            Err(err) => {
                debug!(partition = p, error = %err, "watermarks not read");
                continue;
            }
        };
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        out.push((p, (high - at).max(0)));
    }
    out.sort_unstable();
    out
}

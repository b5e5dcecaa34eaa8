//! What the `job` binary shows an operator: Kafka consumer lag per partition (the consumer's
//! position against the partition's high watermark, read every [`LAG_EVERY`]), failed Kafka
//! and Redis calls by kind, and the readiness checks of `/readyz` (consumer assigned and
//! brokers reachable, Redis answering).

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::Offset;
use starling_cluster::health::{CheckFuture, Readiness};
use starling_cluster::metrics::{self, DependencyErrors, ErrorKind, Metrics};
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
    /// Consume calls that failed (broker down, say), by kind ([`kafka_error_kind`]).
    pub kafka_errors: Arc<DependencyErrors>,
    /// Registry reads that failed (Redis down or hung), by kind.
    pub redis_errors: Arc<DependencyErrors>,
}

impl Default for KafkaOps {
    fn default() -> Self {
        KafkaOps {
            consumer: Mutex::default(),
            lag: Mutex::default(),
            kafka_errors: DependencyErrors::new(),
            redis_errors: DependencyErrors::new(),
        }
    }
}

/// A failed consume call's kind: librdkafka's timeouts (a request past `request.timeout.ms`,
/// an operation past its deadline) are `timeout`, anything else (transport failure, unknown
/// topic, a broker's error) is `error`.
pub fn kafka_error_kind(e: &KafkaError) -> ErrorKind {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut,
        ) => ErrorKind::Timeout,
        _ => ErrorKind::Error,
    }
}

impl KafkaOps {
    pub fn set_consumer(&self, c: Arc<StreamConsumer>) {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }

    fn consumer(&self) -> Option<Arc<StreamConsumer>> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers `starling_job_kafka_lag{partition}`, `starling_job_kafka_errors_total{kind}`
    /// and `starling_job_redis_errors_total{kind}`.
    pub fn register(self: &Arc<Self>, m: &Metrics) {
        let s = self.clone();
        m.collect(move |enc| {
            s.kafka_errors.encode(
                enc,
                "starling_job_kafka_errors",
                "Kafka consume calls that failed, by kind.",
            )?;
            s.redis_errors.encode(
                enc,
                "starling_job_redis_errors",
                "Calls to Redis that failed (the comet registry's reads), by kind.",
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
pub fn lag_of(c: &StreamConsumer, topic: &str) -> Vec<(i32, i64)> {
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

#[cfg(test)]
mod tests {
    use super::lag_of;
    use rdkafka::ClientConfig;
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use starling_cluster::testkit::Tansu;
    use std::time::Duration;

    /// The lag job exports is what its consumer has not read yet, against a real broker:
    /// the whole partition before the first read, then what is left after each read.
    #[tokio::test]
    async fn the_lag_is_what_the_consumer_has_not_read() {
        let broker = Tansu::start();
        let topic = "lag-test";
        broker.create_topic(topic, 1);
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.addr.to_string())
            .create()
            .unwrap();
        for i in 0..10 {
            let body = format!("m-{i}");
            producer
                .send(BaseRecord::to(topic).key("k").payload(&body))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let config = starling_cluster::kafka::Config {
            brokers: vec![broker.addr.to_string()],
            topic: topic.into(),
            group: "lag-test-group".into(),
            ..Default::default()
        };
        let c = super::super::consumer(&config).unwrap();
        let consumer = &c;
        let recv = || async move {
            tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .expect("a message within 30 s")
                .unwrap()
                .offset()
        };
        assert_eq!(recv().await, 0);
        assert_eq!(lag_of(&c, topic), [(0, 9)], "one of ten read");
        for want in 1..10 {
            assert_eq!(recv().await, want);
        }
        assert_eq!(lag_of(&c, topic), [(0, 0)], "all read");
    }
}

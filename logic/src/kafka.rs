//! logic → job through Kafka: each `PushMsg` is produced as goim's protobuf with acks=all,
//! keyed as goim keys it (PUSH: the first key; ROOM: the room; BROADCAST: the operation), so
//! one room's or one key's messages stay in one partition, in order. A push is reported
//! accepted only once the brokers acknowledged it; when they do not within the deadline the
//! HTTP push answers -500 (goim's sarama producer retries 10 times and can hold a request
//! much longer).

use crate::store::BoxFuture;
use crate::{PushError, PushSink};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use starling_cluster::kafka::Config;
use starling_cluster::metrics::{DependencyErrors, ErrorKind};
use starling_proto::grpc::logic::{PushMsg, push_msg};
use std::sync::Arc;
use std::time::Duration;

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
    errors: Arc<DependencyErrors>,
}

impl KafkaSink {
    pub fn new(config: &Config) -> Result<Self, rdkafka::error::KafkaError> {
        let ms = config.timeout.as_millis().max(1).to_string();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", config.brokers.join(","))
            .set("acks", "all")
            // The whole delivery, retries included, ends within the deadline.
            .set("message.timeout.ms", &ms)
            .set("request.timeout.ms", &ms)
            .set("linger.ms", "1")
            .create()?;
        Ok(KafkaSink {
            producer,
            topic: config.topic.clone(),
            timeout: config.timeout,
            errors: DependencyErrors::new(),
        })
    }

    /// Produce calls that failed, by kind: `timeout` when the brokers did not acknowledge
    /// within `kafka.timeout` (librdkafka's message timeout, or ours 200 ms later), `error`
    /// for anything else (a refused record, an unknown topic).
    pub fn errors(&self) -> &Arc<DependencyErrors> {
        &self.errors
    }
}

/// librdkafka reports a record it could not deliver within `message.timeout.ms` as
/// `MessageTimedOut`; so does a request past `request.timeout.ms`.
fn error_kind(e: &KafkaError) -> ErrorKind {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            ErrorKind::Timeout
        }
        _ => ErrorKind::Error,
    }
}

/// The Kafka record key: `PushMsg.partition_key` when set (IM deliveries, one per
/// conversation), otherwise goim's (`internal/logic/dao/kafka.go`).
pub fn message_key(m: &PushMsg) -> String {
    if !m.partition_key.is_empty() {
        return m.partition_key.clone();
    }
    match push_msg::Type::try_from(m.r#type) {
        Ok(push_msg::Type::Push) => m.keys.first().cloned().unwrap_or_default(),
        Ok(push_msg::Type::Room) => m.room.clone(),
        _ => m.operation.to_string(),
    }
}

impl KafkaSink {
    /// A `/readyz` check: the brokers answer a metadata request for the topic within the
    /// push timeout (run on the blocking pool: librdkafka's call blocks).
    pub fn check(
        &self,
    ) -> impl Fn() -> starling_cluster::health::CheckFuture + Send + Sync + 'static {
        let (producer, topic, timeout) = (self.producer.clone(), self.topic.clone(), self.timeout);
        move || {
            let (producer, topic) = (producer.clone(), topic.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    use rdkafka::producer::Producer as _;
                    producer
                        .client()
                        .fetch_metadata(Some(&topic), timeout)
                        .map(|_| ())
                        .map_err(|e| format!("brokers: {e}"))
                })
                .await
                .map_err(|e| e.to_string())?
            })
        }
    }
}

impl PushSink for KafkaSink {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        Box::pin(async move {
            let key = message_key(&msg);
            let payload = msg.encode_to_vec();
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            // The local queue wait counts toward the same deadline.
            let send = self.producer.send(record, Timeout::After(self.timeout));
            match tokio::time::timeout(self.timeout + Duration::from_millis(200), send).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => {
                    self.errors.record(error_kind(&e));
                    Err(PushError::Unavailable(format!("kafka: {e}")))
                }
                Err(_) => {
                    self.errors.record(ErrorKind::Timeout);
                    Err(PushError::Unavailable(
                        "kafka: no acknowledgement in time".into(),
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_keyed_as_goim_keys_them() {
        let mut m = PushMsg {
            r#type: push_msg::Type::Push as i32,
            keys: vec!["k1".into(), "k2".into()],
            operation: 1000,
            ..Default::default()
        };
        assert_eq!(message_key(&m), "k1");
        m.r#type = push_msg::Type::Room as i32;
        m.room = "live://1".into();
        assert_eq!(message_key(&m), "live://1");
        m.r#type = push_msg::Type::Broadcast as i32;
        assert_eq!(message_key(&m), "1000");
        m.partition_key = "c:7".into();
        assert_eq!(
            message_key(&m),
            "c:7",
            "Starling's partition key wins when set"
        );
    }
}

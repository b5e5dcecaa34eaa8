//! The `[kafka]` table: where logic produces `PushMsg`s and job consumes them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Bootstrap brokers, `host:port` (goim: `127.0.0.1:9092`).
    pub brokers: Vec<String>,
    /// goim: `goim-push-topic`.
    pub topic: String,
    /// job's consumer group (goim: `goim-push-group-job`).
    pub group: String,
    /// How long logic waits for the brokers to acknowledge a push (acks=all) before the HTTP
    /// push answers -500 (at most 200 ms later).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// job: how long the group waits for a silent consumer before giving its partitions to
    /// another (or to the same job restarted). Kafka's default is 45s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// job: the longest a fetch may wait at the broker for new messages (librdkafka's
    /// `fetch.wait.max.ms`, default 500 ms). Kafka answers a fetch as soon as data arrives;
    /// a broker that answers only at this deadline (tansu 0.6 was measured so) adds it to
    /// every delivery, hence a short default. Shorter costs more idle fetch requests.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "goim-push-topic".into(),
            group: "goim-push-group-job".into(),
            timeout: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(20),
        }
    }
}

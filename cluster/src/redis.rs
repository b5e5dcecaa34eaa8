//! Redis: the `[redis]` table shared by comet, logic and job, and a connection that
//! reconnects by itself and never waits longer than its deadline.

pub use redis::aio::ConnectionManager;
use redis::aio::ConnectionManagerConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use redis::RedisError;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]` (goim: `127.0.0.1:6379`).
    pub url: String,
    /// Deadline of one command, and of one connection attempt (goim: 500 ms / 200 ms).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// TTL of sessions and room counts; heartbeats refresh it (goim `redis.expire`: 30m).
    #[serde(with = "humantime_serde")]
    pub expire: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "redis://127.0.0.1:6379".into(),
            timeout: Duration::from_millis(500),
            expire: Duration::from_secs(30 * 60),
        }
    }
}

/// A connection that is made on first use and remade after a failure: a call while Redis is
/// down fails within `timeout` instead of waiting, and calls succeed again once it is back.
/// Must be called inside a tokio runtime.
pub fn connect(config: &Config) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(config.url.as_str())?;
    let mc = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        // A failed call is reported at once; the next call tries a fresh connection.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(config.timeout);
    ConnectionManager::new_lazy_with_config(client, mc)
}

/// How a Redis call failed, for the `starling_<tier>_redis_errors_total{kind}` counters: a
/// timeout when no answer came within `timeout` (redis-rs reports the connection's response
/// or connect timeout as an I/O `TimedOut`), an error otherwise (refused, reset, an error
/// reply).
pub fn error_kind(e: &RedisError) -> crate::metrics::ErrorKind {
    if e.is_timeout() {
        crate::metrics::ErrorKind::Timeout
    } else {
        crate::metrics::ErrorKind::Error
    }
}

//! The `[im]` configuration (reference im.md §11, §13.12). IM is off unless `enabled` and
//! either a `token_secret` or the development switch `insecure_trust_mid` is set: goim-only
//! users pay nothing, and a deployment cannot run IM on a default secret.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("im.{key}: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// Which connections of one user may stay connected together (§7.6, §13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MultiLogin {
    /// Any number of devices.
    #[default]
    Multi,
    /// One connection per platform string: a second `ios` login replaces the first.
    OnePerPlatform,
    /// One per class: mobile (ios, android), desktop (windows, mac, linux), web, other.
    OnePerClass,
    /// One connection per user.
    Single,
}

/// Who may open a P2P conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum P2pPolicy {
    /// Anyone not blocked by the recipient.
    #[default]
    Open,
    /// Only senders the recipient lists as a friend.
    Friends,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// fjall under `path`: one process owns it.
    #[default]
    Embedded,
    /// PostgreSQL at `postgres_url`: any number of logic processes share it (reference im.md
    /// §6.3).
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DurabilitySetting {
    /// fdatasync before any acknowledgement.
    #[default]
    Sync,
    /// To OS buffers only: survives a process crash, not a power loss. Benchmarks only.
    Buffer,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    pub store: StoreKind,
    /// The embedded store's directory (relative to the working directory).
    pub path: PathBuf,
    pub durability: DurabilitySetting,
    /// Signs and verifies `im_token` (HS256, the UTF-8 bytes are the key).
    pub token_secret: String,
    /// Development only: trust the `mid` of goim's token, no `im_token` needed.
    pub insecure_trust_mid: bool,
    /// Bearer token of the `/im/v1` management API; empty turns the routes off.
    pub admin_token: String,
    pub multi_login: MultiLogin,
    pub p2p_policy: P2pPolicy,
    /// Largest packet an IM connection may send, header included, bytes.
    pub max_body: u32,
    /// Largest `content` of a message, bytes.
    pub max_content: u32,
    /// Sends and recalls per connection per second; the burst is twice this.
    pub send_rate: u32,
    /// A connection that sends more than this many requests, within `flood_window`, before
    /// the `retry_after_ms` its last 429 gave it has passed (it ignores the retry-after) is
    /// closed with `IM_KICK` code 4005 (`FLOOD`); 0 never closes. A client that waits as told
    /// is never closed, however many 429s it gets (requests it had already sent when the
    /// 429 came count, so the bound leaves room for a pipelined burst).
    pub flood_refusals: u32,
    /// See `flood_refusals`.
    #[serde(with = "humantime_serde")]
    pub flood_window: Duration,
    /// How long after sending a user may recall (owners, admins and the API are exempt);
    /// 0 = no limit.
    #[serde(with = "humantime_serde")]
    pub recall_window: Duration,
    /// Drop a recalled message's content.
    pub recall_wipe: bool,
    pub max_group_members: u32,
    /// Largest pull page; a larger `limit` is clamped.
    pub pull_limit_max: u32,
    pub unread_cap: u32,
    /// Advertised to clients: how long to wait for a missing seq before pulling.
    #[serde(with = "humantime_serde")]
    pub gap_wait: Duration,
    /// Advertised to clients: the idle resync period.
    #[serde(with = "humantime_serde")]
    pub resync_hint: Duration,
    /// Subtracted from a directory sync's `server_ts`, so commits racing a pass are not missed.
    #[serde(with = "humantime_serde")]
    pub sync_overlap: Duration,
    /// Typing events go to groups up to this size.
    pub typing_max_members: u32,
    /// Read events go to a group's members up to this size (0 = never).
    pub group_read_receipts_max: u32,
    /// The embedded store's background threads (flush, compaction).
    pub store_threads: usize,
    /// Most writes in one group commit.
    pub store_batch_max: usize,
    /// `store = "postgres"`: the database, as a libpq URL (`postgres://user:pw@host/db`) or
    /// key=value string. Required with that store.
    pub postgres_url: String,
    /// `store = "postgres"`: most connections this process holds.
    pub postgres_pool: usize,
    /// `store = "postgres"`: every store call's deadline; past it the call answers 503 with
    /// nothing acknowledged.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// `store = "postgres"`: longest wait for a pooled connection when all are busy (at most
    /// `store_timeout`, the default). Past it the request is answered 503 `store overloaded`
    /// (nothing stored) with `retry_after_ms` = `overload_retry_after` for a send or recall.
    /// Set below comet's deadline it refuses at once what would answer late; in the soak
    /// (bench/RESULTS.md, "Soak") 250 ms started the clients' retry storm earlier instead, so
    /// it is not on by default.
    #[serde(with = "humantime_serde")]
    pub postgres_pool_wait: Duration,
    /// The `retry_after_ms` of a send or recall refused as `store overloaded`.
    #[serde(with = "humantime_serde")]
    pub overload_retry_after: Duration,
    /// Acks of client sends kept in memory, so that a retry of a send already stored and
    /// handed to delivery is answered without the store (`crate::recent`); 0 = off. At most
    /// 10,000,000 (each holds a few hundred bytes).
    pub recent_acks: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            store: StoreKind::Embedded,
            path: PathBuf::from("data/im"),
            durability: DurabilitySetting::Sync,
            token_secret: String::new(),
            insecure_trust_mid: false,
            admin_token: String::new(),
            multi_login: MultiLogin::Multi,
            p2p_policy: P2pPolicy::Open,
            max_body: 16384,
            max_content: 8192,
            send_rate: 20,
            flood_refusals: 20,
            flood_window: Duration::from_secs(10),
            recall_window: Duration::from_secs(120),
            recall_wipe: true,
            max_group_members: 2000,
            pull_limit_max: 200,
            unread_cap: 999,
            gap_wait: Duration::from_secs(1),
            resync_hint: Duration::from_secs(300),
            sync_overlap: Duration::from_secs(10),
            typing_max_members: 100,
            group_read_receipts_max: 0,
            store_threads: 1,
            store_batch_max: 512,
            postgres_url: String::new(),
            postgres_pool: 16,
            store_timeout: Duration::from_secs(5),
            postgres_pool_wait: Duration::from_secs(5),
            overload_retry_after: Duration::from_secs(1),
            recent_acks: 8192,
        }
    }
}

/// Secrets too weak to sign tokens with: a deployment that kept one would let anyone log in
/// as anyone (OpenIM shipped `openIM123` as its default; reference im.md §5.1).
const WEAK_SECRET_LEN: usize = 16;

impl Config {
    /// Refuses settings IM cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.token_secret.is_empty() && !self.insecure_trust_mid {
            return Err(invalid(
                "token_secret",
                "IM needs a secret to verify im_token (or insecure_trust_mid = true for development)",
            ));
        }
        if !self.token_secret.is_empty() && self.token_secret.len() < WEAK_SECRET_LEN {
            return Err(invalid(
                "token_secret",
                format!("at least {WEAK_SECRET_LEN} bytes"),
            ));
        }
        if self.max_body < 64 || self.max_body > 1 << 20 {
            return Err(invalid("max_body", "between 64 and 1048576 bytes"));
        }
        if self.max_content == 0 || self.max_content >= self.max_body {
            return Err(invalid("max_content", "above 0 and below max_body"));
        }
        if self.send_rate == 0 {
            return Err(invalid("send_rate", "at least 1"));
        }
        if self.flood_refusals > 0 && self.flood_window.is_zero() {
            return Err(invalid(
                "flood_window",
                "above 0 when flood_refusals is set",
            ));
        }
        if self.max_group_members < 2 {
            return Err(invalid("max_group_members", "at least 2"));
        }
        if self.pull_limit_max == 0 {
            return Err(invalid("pull_limit_max", "at least 1"));
        }
        if self.store_batch_max == 0 {
            return Err(invalid("store_batch_max", "at least 1"));
        }
        if self.store_threads == 0 {
            return Err(invalid("store_threads", "at least 1"));
        }
        if self.store == StoreKind::Postgres && self.postgres_url.is_empty() {
            return Err(invalid(
                "postgres_url",
                "required with store = \"postgres\"",
            ));
        }
        if self.postgres_pool == 0 {
            return Err(invalid("postgres_pool", "at least 1"));
        }
        if self.store_timeout.is_zero() {
            return Err(invalid("store_timeout", "above 0"));
        }
        if self.overload_retry_after > Duration::from_secs(3600) {
            return Err(invalid("overload_retry_after", "at most 1h"));
        }
        if self.recent_acks > 10_000_000 {
            return Err(invalid("recent_acks", "at most 10000000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_refuses_to_run_without_a_secret() {
        let c = Config::default();
        assert!(!c.enabled);
        assert_eq!(c.validate(), Ok(()));
        let on = Config {
            enabled: true,
            ..Config::default()
        };
        assert!(matches!(
            on.validate(),
            Err(ConfigError::Invalid {
                key: "token_secret",
                ..
            })
        ));
        let weak = Config {
            token_secret: "secret".into(),
            ..on.clone()
        };
        assert!(matches!(
            weak.validate(),
            Err(ConfigError::Invalid {
                key: "token_secret",
                ..
            })
        ));
        let dev = Config {
            insecure_trust_mid: true,
            ..on.clone()
        };
        assert_eq!(dev.validate(), Ok(()));
        let bad = Config {
            max_content: 20000,
            ..dev.clone()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "max_content",
                ..
            })
        ));
        let huge = Config {
            recent_acks: 10_000_001,
            ..dev
        };
        assert!(matches!(
            huge.validate(),
            Err(ConfigError::Invalid {
                key: "recent_acks",
                ..
            })
        ));
    }

    #[test]
    fn postgres_needs_a_url_and_parses_its_keys() {
        let on = Config {
            enabled: true,
            insecure_trust_mid: true,
            store: StoreKind::Postgres,
            ..Config::default()
        };
        assert!(matches!(
            on.validate(),
            Err(ConfigError::Invalid {
                key: "postgres_url",
                ..
            })
        ));
        let parsed: Config = toml::from_str(
            "enabled = true\ninsecure_trust_mid = true\nstore = \"postgres\"\n\
             postgres_url = \"postgres://im@db/im\"\npostgres_pool = 4\nstore_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(parsed.validate(), Ok(()));
        assert_eq!(
            (parsed.postgres_pool, parsed.store_timeout),
            (4, Duration::from_secs(2))
        );
        let defaults = Config::default();
        assert_eq!(
            (defaults.postgres_pool, defaults.store_timeout),
            (16, Duration::from_secs(5))
        );
    }
}

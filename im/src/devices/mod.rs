//! The device table: every IM-opted-in connection, by user (reference im.md §7.6). It routes
//! deliveries (which comet, which codec) and applies the multi-login policy. goim's own
//! session layout (`mid_`, `key_`) is left as goim reads it; plain goim connections of the same
//! user are neither listed here nor kicked.
//!
//! Two implementations behind one enum, [`DeviceTable`] (no boxing, no dynamic dispatch on
//! the delivery path):
//! - [`MemoryDevices`]: the all-in-one's, 40 bytes per connection;
//! - [`RedisDevices`]: the `logic` process's, `starling:im:dev:{mid}` hashes shared by any
//!   number of logic nodes, with the policy applied atomically in a Lua script.

mod memory;
mod redis;

pub use memory::MemoryDevices;
pub use redis::{RedisDevices, dev_key};

use crate::config::MultiLogin;
use starling_proto::op::Codec;
use thiserror::Error;

/// One IM connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub mid: i64,
    /// goim's connection key: the device id.
    pub key: String,
    pub platform: String,
    pub codec: Codec,
    /// The comet holding it.
    pub server: String,
    /// The connection's id within its comet (`ConnectReq.conn`): tells this connection's
    /// disconnect from that of an older one with the same key. The memory table keeps only a
    /// hash and hands back an empty string.
    pub conn: String,
    /// When it connected, ms since the Unix epoch (kept to the second).
    pub since_ms: i64,
}

/// What registering a connection displaced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Displaced {
    /// The same key held by another comet: the same device reconnecting there. Its old
    /// connection is closed silently (goim's same-key rule, §13.11).
    pub same_key: Option<Device>,
    /// Connections the policy replaces: each gets a kick (4001) before its close.
    pub kicked: Vec<Device>,
}

/// A connection as the hot paths see it, borrowed from the table (or from one Redis reply).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRef<'a> {
    pub mid: i64,
    pub key: &'a str,
    pub platform: &'a str,
    pub codec: Codec,
    pub server: &'a str,
    pub since_ms: i64,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Redis did not answer within `redis.timeout`, or refused the call. Logins are refused
    /// and sends answer 503 (with `stored=true` once committed) until it is back.
    #[error("device table unavailable: {0}")]
    Unavailable(String),
}

/// The longest platform string an IM connection may name, bytes (kept inline in memory).
pub const MAX_PLATFORM: usize = 12;

/// Platform classes of `one_per_class` (OpenIM's `AllLoginButSameClassKick`), lowercase
/// platform → class; any other platform is a class of its own. The Redis table's Lua script
/// is built from this list, so both tables classify alike.
pub const CLASSES: &[(&str, &str)] = &[
    ("ios", "mobile"),
    ("android", "mobile"),
    ("ipad", "mobile"),
    ("mobile", "mobile"),
    ("windows", "desktop"),
    ("mac", "desktop"),
    ("macos", "desktop"),
    ("linux", "desktop"),
    ("pc", "desktop"),
    ("desktop", "desktop"),
    ("web", "web"),
    ("h5", "web"),
    ("browser", "web"),
];

/// The class `one_per_class` counts in: [`CLASSES`] by the lowercase platform, else the
/// platform itself.
pub fn platform_class(platform: &str) -> &str {
    let lower = platform.to_ascii_lowercase();
    CLASSES
        .iter()
        .find(|(p, _)| *p == lower)
        .map_or(platform, |(_, c)| c)
}

/// Whether `policy` replaces a connection on `old` platform when one on `new` logs in (a
/// different key; the same key is never kicked).
pub fn displaces(policy: MultiLogin, old: &str, new: &str) -> bool {
    match policy {
        MultiLogin::Multi => false,
        MultiLogin::OnePerPlatform => old == new,
        MultiLogin::OnePerClass => platform_class(old) == platform_class(new),
        MultiLogin::Single => true,
    }
}

/// The device table: in memory (the all-in-one) or in Redis (logic nodes). Every call is
/// async for Redis's sake; the memory table answers without awaiting.
pub enum DeviceTable {
    Memory(MemoryDevices),
    Redis(RedisDevices),
}

impl Default for DeviceTable {
    fn default() -> Self {
        DeviceTable::Memory(MemoryDevices::default())
    }
}

impl DeviceTable {
    /// Adds `dev`, removing and returning what `policy` displaces, in one atomic step (Redis:
    /// one Lua script, so two logins on two logic nodes under `single` cannot both stay). The
    /// same key is never kicked: on the same comet comet itself replaces it silently,
    /// elsewhere it is returned in `same_key`.
    pub async fn register(
        &self,
        dev: Device,
        policy: MultiLogin,
    ) -> Result<Displaced, DeviceError> {
        match self {
            DeviceTable::Memory(t) => Ok(t.register(dev, policy)),
            DeviceTable::Redis(t) => t.register(dev, policy).await,
        }
    }

    /// Removes the connection `key` of `mid` if it is still the one on `server` with id
    /// `conn` (an empty `conn`, from a goim comet, matches any). `true` if removed.
    pub async fn remove(
        &self,
        mid: i64,
        key: &str,
        server: &str,
        conn: &str,
    ) -> Result<bool, DeviceError> {
        match self {
            DeviceTable::Memory(t) => Ok(t.remove(mid, key, server, conn)),
            DeviceTable::Redis(t) => t.remove(mid, key, server, conn).await,
        }
    }

    /// Removes and returns `mid`'s connections matching `platform` and `key` (empty = any).
    pub async fn take(
        &self,
        mid: i64,
        platform: &str,
        key: &str,
    ) -> Result<Vec<Device>, DeviceError> {
        match self {
            DeviceTable::Memory(t) => Ok(t.take(mid, platform, key)),
            DeviceTable::Redis(t) => t.take(mid, platform, key).await,
        }
    }

    pub async fn get(&self, mid: i64, key: &str) -> Result<Option<Device>, DeviceError> {
        match self {
            DeviceTable::Memory(t) => Ok(t.get(mid, key)),
            DeviceTable::Redis(t) => t.get(mid, key).await,
        }
    }

    /// Every connection of these users.
    pub async fn of_users(&self, mids: &[i64]) -> Result<Vec<Device>, DeviceError> {
        match self {
            DeviceTable::Memory(t) => Ok(t.of_users(mids)),
            DeviceTable::Redis(t) => t.of_users(mids).await,
        }
    }

    /// Calls `f` for every connection of these users without copying them out (the delivery
    /// path). Memory: under the table's lock, so `f` must not block. Redis: one pipelined
    /// round trip for all the users, then `f` over the reply.
    pub async fn visit(
        &self,
        mids: &[i64],
        f: impl FnMut(DeviceRef<'_>),
    ) -> Result<(), DeviceError> {
        match self {
            DeviceTable::Memory(t) => {
                t.visit(mids, f);
                Ok(())
            }
            DeviceTable::Redis(t) => t.visit(mids, f).await,
        }
    }

    /// A heartbeat of `dev`'s connection (design §7.6; goim's heartbeat puts back lost
    /// session keys alike): the shared table puts the entry back if Redis lost it and pushes
    /// the expiry back; `Ok(true)` when it was put back. The memory table loses nothing.
    pub async fn restore(&self, dev: &Device) -> Result<bool, DeviceError> {
        match self {
            DeviceTable::Memory(_) => Ok(false),
            DeviceTable::Redis(t) => t.restore(dev).await,
        }
    }

    /// Pushes the expiry of `mid`'s hash back (Redis; memory has nothing to do).
    pub async fn touch(&self, mid: i64) -> Result<(), DeviceError> {
        match self {
            DeviceTable::Memory(_) => Ok(()),
            DeviceTable::Redis(t) => t.touch(mid).await,
        }
    }

    /// Connected IM devices, all users; `None` when the table is shared (Redis) and this
    /// process cannot count it cheaply.
    pub fn count(&self) -> Option<usize> {
        match self {
            DeviceTable::Memory(t) => Some(t.len()),
            DeviceTable::Redis(_) => None,
        }
    }
}

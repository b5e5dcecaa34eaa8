//! The device table in Redis, shared by every logic node (reference im.md §7.6):
//!
//! | key | type | field | value | TTL |
//! |---|---|---|---|---|
//! | `starling:im:dev:{mid}` | hash | goim key | `{codec}\|{since_s}\|{conn}\|{server}\|{platform}` | `redis.expire` |
//! | `starling:im:gone:{mid}` | hash | goim key | the `conn` that left (disconnect, kick) | `redis.expire` |
//!
//! The braces are literal (a Redis Cluster hash tag): a user's two hashes share a slot, so
//! one script may touch both.
//! The value is compact text: `codec` is 1 (protobuf) or 2 (JSON), `since_s` the connect time
//! in seconds after the Unix epoch, `conn` the comet's connection id
//! (`worker.index.generation`), `server` the comet's id, and the platform last (it is the
//! client's string and may hold `|`). About 30 bytes, e.g. `1|1732300000|0.12.3|comet-a|ios`.
//!
//! Atomicity: registering (policy and all), removing (compare the stored `conn`) and taking
//! (admin kicks) are each one Lua script on the one hash, so two logins of one user on two
//! logic nodes are serialised by Redis: under `single` exactly one stays. One key per script
//! also keeps the table usable on Redis Cluster. The hash's TTL is set on every login and
//! pushed back on every heartbeat of the user, as goim does for `mid_{mid}`; a hash whose
//! user stopped heartbeating (a logic node died before reporting the disconnects) expires.
//!
//! A heartbeat puts back an entry Redis lost (restart, failover, expiry), as goim's heartbeat
//! puts back its session. comet sends a connection's heartbeat and its disconnect without
//! waiting for either, so a heartbeat may reach logic after the disconnect (or after a kick)
//! removed the entry: every removal leaves the connection's id in the `gone` hash, and a
//! heartbeat of a connection listed there puts nothing back.

use super::{CLASSES, Device, DeviceError, DeviceRef, Displaced};
use crate::config::MultiLogin;
use redis::Script;
use redis::aio::ConnectionManager;
use starling_cluster::metrics::DependencyErrors;
use starling_proto::op::Codec;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The hash of `mid`'s IM connections.
pub fn dev_key(mid: i64) -> String {
    format!("starling:im:dev:{{{mid}}}")
}

/// The hash of `mid`'s connections that left: goim key → connection id.
pub fn gone_key(mid: i64) -> String {
    format!("starling:im:gone:{{{mid}}}")
}

/// Shared by the scripts: `parse(v)` → codec, since, conn, server, platform (nil on a value
/// this version did not write).
const PARSE: &str = r#"
local function parse(v)
  return string.match(v, '^(%d*)|(%d*)|([^|]*)|([^|]*)|(.*)$')
end
"#;

/// KEYS[1] the hash, KEYS[2] the `gone` hash; ARGV: key, value, policy (`multi`,
/// `one_per_platform`, `one_per_class`, `single`), ttl ms. Removed entries (and the key's own
/// previous connection) are listed as gone. Returns a flat list of (kind, key, value): kind `s` is the same key on
/// another comet (closed silently), `k` a connection the policy kicks. Both are removed and
/// the new value stored, in one step.
const REGISTER: &str = r#"
local _, _, _, newserver, newplat = parse(ARGV[2])
local function class(p)
  return CLASSES[string.lower(p)] or p
end
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local k, v = all[i], all[i + 1]
  local _, _, _, server, plat = parse(v)
  if k == ARGV[1] then
    if server ~= newserver then
      table.insert(out, 's'); table.insert(out, k); table.insert(out, v)
    end
    local _, _, oldconn = parse(v)
    if oldconn then redis.call('HSET', KEYS[2], k, oldconn) end
  elseif plat then
    local p = ARGV[3]
    if p == 'single' or (p == 'one_per_platform' and plat == newplat)
        or (p == 'one_per_class' and class(plat) == class(newplat)) then
      redis.call('HDEL', KEYS[1], k)
      local _, _, oldconn = parse(v)
      redis.call('HSET', KEYS[2], k, oldconn or '')
      table.insert(out, 'k'); table.insert(out, k); table.insert(out, v)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return out
"#;

/// KEYS[1] the hash, KEYS[2] the `gone` hash; ARGV: key, server, conn, ttl ms. Lists the
/// connection as gone (so its late heartbeat puts nothing back), then deletes the field only
/// if it is still that connection (an empty conn matches any on that server). 1 if deleted.
const REMOVE: &str = r#"
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local _, _, conn, server = parse(v)
if server ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and conn ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// KEYS[1] the hash, KEYS[2] the `gone` hash; ARGV: key, value, ttl ms, conn. Puts the entry
/// back when its key is missing (Redis lost it: restarted without persistence, failed over,
/// or the hash expired) unless that connection is listed as gone (its disconnect or kick was
/// processed first), and pushes the hash's expiry back. 1 if it was put back.
const RESTORE: &str = r#"
local restored = 0
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[4] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  restored = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return restored
"#;

/// KEYS[1] the hash, KEYS[2] the `gone` hash; ARGV: platform, key (empty = any), ttl ms.
/// Deletes and returns the matching fields as a flat list of (key, value), listed as gone.
const TAKE: &str = r#"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local k, v = all[i], all[i + 1]
  local _, _, _, _, plat = parse(v)
  if (ARGV[2] == '' or k == ARGV[2]) and (ARGV[1] == '' or plat == ARGV[1]) then
    redis.call('HDEL', KEYS[1], k)
    local _, _, conn = parse(v)
    redis.call('HSET', KEYS[2], k, conn or '')
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    table.insert(out, k); table.insert(out, v)
  end
end
return out
"#;

/// The Lua table of [`CLASSES`], so both tables classify platforms alike.
fn classes_lua() -> String {
    let mut s = String::from("local CLASSES = {");
    for (p, c) in CLASSES {
        s.push_str(&format!("['{p}'] = '{c}', "));
    }
    s.push_str("}\n");
    s
}

fn policy_name(p: MultiLogin) -> &'static str {
    match p {
        MultiLogin::Multi => "multi",
        MultiLogin::OnePerPlatform => "one_per_platform",
        MultiLogin::OnePerClass => "one_per_class",
        MultiLogin::Single => "single",
    }
}

/// Counts a failed call in `errors` (by kind) and turns it into the table's error.
fn unavailable(errors: &DependencyErrors, e: redis::RedisError) -> DeviceError {
    errors.record(starling_cluster::redis::error_kind(&e));
    DeviceError::Unavailable(e.to_string())
}

/// A stored value for `d`. `conn` and `server` must not hold `|` (comet ids never do).
fn encode(d: &Device) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        d.codec as i32,
        d.since_ms.max(0) / 1000,
        d.conn,
        d.server,
        d.platform
    )
}

/// A stored value as the hot paths see it, borrowing from `v`; `None` for a value this
/// version cannot read.
fn decode<'a>(mid: i64, key: &'a str, v: &'a str) -> Option<DeviceRef<'a>> {
    let mut it = v.splitn(5, '|');
    let codec = Codec::from_im(it.next()?.parse().ok()?)?;
    let since_s: i64 = it.next()?.parse().ok()?;
    let _conn = it.next()?;
    let server = it.next()?;
    let platform = it.next()?;
    Some(DeviceRef {
        mid,
        key,
        platform,
        codec,
        server,
        since_ms: since_s * 1000,
    })
}

/// A stored value as an owned [`Device`], its `conn` included.
fn device(mid: i64, key: &str, v: &str) -> Option<Device> {
    let d = decode(mid, key, v)?;
    Some(Device {
        mid,
        key: key.to_string(),
        platform: d.platform.to_string(),
        codec: d.codec,
        server: d.server.to_string(),
        conn: v.split('|').nth(2)?.to_string(),
        since_ms: d.since_ms,
    })
}

fn skipped(mid: i64, key: &str, v: &str) {
    warn!(mid, key = ?key, value = ?v, "unreadable device entry skipped");
}

pub struct RedisDevices {
    conn: ConnectionManager,
    expire: Duration,
    register: Script,
    remove: Script,
    take: Script,
    restore: Script,
    errors: Arc<DependencyErrors>,
}

impl RedisDevices {
    /// `expire`: the hashes' TTL (`redis.expire`, the same as goim's session keys).
    pub fn new(conn: ConnectionManager, expire: Duration) -> Self {
        RedisDevices {
            conn,
            expire,
            register: Script::new(&format!("{PARSE}{}{REGISTER}", classes_lua())),
            remove: Script::new(&format!("{PARSE}{REMOVE}")),
            take: Script::new(&format!("{PARSE}{TAKE}")),
            restore: Script::new(RESTORE),
            errors: DependencyErrors::new(),
        }
    }

    /// Counts failed calls in `errors` (the logic node's Redis counter, shared with its
    /// session store) instead of a counter of its own.
    pub fn with_errors(mut self, errors: Arc<DependencyErrors>) -> Self {
        self.errors = errors;
        self
    }

    /// Failed calls by kind (timeouts, errors).
    pub fn errors(&self) -> &Arc<DependencyErrors> {
        &self.errors
    }

    fn ttl_ms(&self) -> u64 {
        self.expire.as_millis().max(1) as u64
    }

    pub async fn register(
        &self,
        dev: Device,
        policy: MultiLogin,
    ) -> Result<Displaced, DeviceError> {
        let mut inv = self.register.prepare_invoke();
        inv.key(dev_key(dev.mid))
            .key(gone_key(dev.mid))
            .arg(&dev.key)
            .arg(encode(&dev))
            .arg(policy_name(policy))
            .arg(self.ttl_ms());
        let mut conn = self.conn.clone();
        let flat: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        let mut out = Displaced::default();
        for t in flat.chunks_exact(3) {
            let Some(d) = device(dev.mid, &t[1], &t[2]) else {
                skipped(dev.mid, &t[1], &t[2]);
                continue;
            };
            if t[0] == "s" {
                out.same_key = Some(d);
            } else {
                out.kicked.push(d);
            }
        }
        Ok(out)
    }

    pub async fn remove(
        &self,
        mid: i64,
        key: &str,
        server: &str,
        conn: &str,
    ) -> Result<bool, DeviceError> {
        let mut inv = self.remove.prepare_invoke();
        inv.key(dev_key(mid))
            .key(gone_key(mid))
            .arg(key)
            .arg(server)
            .arg(conn)
            .arg(self.ttl_ms());
        let mut c = self.conn.clone();
        let n: i32 = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        Ok(n == 1)
    }

    pub async fn take(
        &self,
        mid: i64,
        platform: &str,
        key: &str,
    ) -> Result<Vec<Device>, DeviceError> {
        let mut inv = self.take.prepare_invoke();
        inv.key(dev_key(mid))
            .key(gone_key(mid))
            .arg(platform)
            .arg(key)
            .arg(self.ttl_ms());
        let mut c = self.conn.clone();
        let flat: Vec<String> = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|p| device(mid, &p[0], &p[1]))
            .collect())
    }

    pub async fn get(&self, mid: i64, key: &str) -> Result<Option<Device>, DeviceError> {
        let mut c = self.conn.clone();
        let v: Option<String> = redis::cmd("HGET")
            .arg(dev_key(mid))
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        Ok(v.and_then(|v| device(mid, key, &v)))
    }

    /// Every user's hash in one pipelined round trip.
    async fn hashes(&self, mids: &[i64]) -> Result<Vec<HashMap<String, String>>, DeviceError> {
        if mids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &m in mids {
            pipe.hgetall(dev_key(m));
        }
        let mut c = self.conn.clone();
        pipe.query_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))
    }

    pub async fn visit(
        &self,
        mids: &[i64],
        mut f: impl FnMut(DeviceRef<'_>),
    ) -> Result<(), DeviceError> {
        let hashes = self.hashes(mids).await?;
        for (&mid, h) in mids.iter().zip(&hashes) {
            for (k, v) in h {
                match decode(mid, k, v) {
                    Some(d) => f(d),
                    None => skipped(mid, k, v),
                }
            }
        }
        Ok(())
    }

    pub async fn of_users(&self, mids: &[i64]) -> Result<Vec<Device>, DeviceError> {
        let hashes = self.hashes(mids).await?;
        let mut out = Vec::new();
        for (&mid, h) in mids.iter().zip(&hashes) {
            out.extend(h.iter().filter_map(|(k, v)| device(mid, k, v)));
        }
        Ok(out)
    }

    /// A heartbeat of `dev`'s connection: puts its entry back if Redis lost it (without the
    /// multi-login policy: the connection was admitted already), and pushes the user's
    /// expiry back. `Ok(true)` when the entry was put back.
    pub async fn restore(&self, dev: &Device) -> Result<bool, DeviceError> {
        let mut inv = self.restore.prepare_invoke();
        inv.key(dev_key(dev.mid))
            .key(gone_key(dev.mid))
            .arg(&dev.key)
            .arg(encode(dev))
            .arg(self.ttl_ms())
            .arg(&dev.conn);
        let mut c = self.conn.clone();
        let n: i32 = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        Ok(n == 1)
    }

    /// Pushes the expiry of `mid`'s hash back (nothing if it has none).
    pub async fn touch(&self, mid: i64) -> Result<(), DeviceError> {
        let mut c = self.conn.clone();
        let _: i32 = redis::cmd("PEXPIRE")
            .arg(dev_key(mid))
            .arg(self.ttl_ms())
            .query_async(&mut c)
            .await
            .map_err(|e| unavailable(&self.errors, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_the_platform_may_hold_the_separator() {
        let d = Device {
            mid: 7,
            key: "k".into(),
            platform: "a|b".into(),
            codec: Codec::Json,
            server: "comet-a".into(),
            conn: "0.12.3".into(),
            since_ms: 1_732_300_000_123,
        };
        let v = encode(&d);
        assert_eq!(v, "2|1732300000|0.12.3|comet-a|a|b");
        assert_eq!(
            device(7, "k", &v),
            Some(Device {
                since_ms: 1_732_300_000_000,
                ..d
            })
        );
        assert_eq!(device(7, "k", "garbage"), None);
        assert_eq!(device(7, "k", "9|1|c|s|p"), None, "an unknown codec");
    }
}

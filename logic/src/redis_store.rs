//! Sessions and room counts in Redis, in goim's layout (`internal/logic/dao/redis.go`), so a
//! goim logic and Starling's can share one Redis:
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `mid_{mid}` | hash | key → comet server id (only for mid > 0) | `redis.expire` |
//! | `key_{key}` | string | comet server id | `redis.expire` |
//! | `ol_{server}` | hash | `cityhash32(room) % 64` → `{"server","room_count","updated"}` | `redis.expire` |
//!
//! Unlike goim, removing a session is conditional (a Lua script): a disconnect from a comet
//! the key has since left does not delete the newer session, and a heartbeat never takes a
//! key back from the comet that holds it now. Every call has the connection's deadline.

use crate::store::{BoxFuture, OnlineStore, Report, SessionStore, StoreError};
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use starling_cluster::metrics::DependencyErrors;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// goim shards a comet's room counts over this many hash fields.
const ONLINE_SHARDS: u32 = 64;

fn key_key(key: &str) -> String {
    format!("key_{key}")
}

fn mid_key(mid: i64) -> String {
    format!("mid_{mid}")
}

fn online_key(server: &str) -> String {
    format!("ol_{server}")
}

/// Counts a failed call in `errors` (by kind) and turns it into the store's error.
fn unavailable(errors: &DependencyErrors, e: redis::RedisError) -> StoreError {
    errors.record(starling_cluster::redis::error_kind(&e));
    StoreError::Unavailable(e.to_string())
}

/// One `ol_{server}` field, as goim writes it.
#[derive(Debug, Serialize, Deserialize)]
struct OnlineShard {
    server: String,
    room_count: HashMap<String, i32>,
    updated: i64,
}

/// KEYS: key_{key} [mid_{mid}]; ARGV: server, key. Deletes only what still points at server.
const REMOVE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #KEYS == 2 and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return 1
"#;

/// KEYS: key_{key} [mid_{mid}]; ARGV: server, ttl ms. 0 if the key is gone (the caller adds
/// it again, as goim's Heartbeat); otherwise refreshes the TTLs if the key is still ours.
const TOUCH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if #KEYS == 2 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
end
return 1
"#;

pub struct RedisSessions {
    conn: ConnectionManager,
    expire: Duration,
    remove: Script,
    touch: Script,
    errors: Arc<DependencyErrors>,
}

impl RedisSessions {
    pub fn new(conn: ConnectionManager, expire: Duration) -> Self {
        RedisSessions {
            conn,
            expire,
            remove: Script::new(REMOVE),
            touch: Script::new(TOUCH),
            errors: DependencyErrors::new(),
        }
    }

    /// Counts failed calls in `errors` (shared with the node's other Redis clients) instead
    /// of a counter of its own.
    pub fn with_errors(mut self, errors: Arc<DependencyErrors>) -> Self {
        self.errors = errors;
        self
    }

    /// Failed calls by kind (timeouts, errors).
    pub fn errors(&self) -> &Arc<DependencyErrors> {
        &self.errors
    }

    fn ttl_ms(&self) -> u64 {
        self.expire.as_millis() as u64
    }

    fn session_keys(mid: i64, key: &str) -> Vec<String> {
        let mut k = vec![key_key(key)];
        if mid > 0 {
            k.push(mid_key(mid));
        }
        k
    }
}

impl SessionStore for RedisSessions {
    fn add(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut pipe = redis::pipe();
        if mid > 0 {
            pipe.hset(mid_key(mid), key, server)
                .ignore()
                .pexpire(mid_key(mid), self.ttl_ms() as i64)
                .ignore();
        }
        pipe.pset_ex(key_key(key), server, self.ttl_ms()).ignore();
        let mut conn = self.conn.clone();
        Box::pin(async move {
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))
        })
    }

    fn remove(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inv = self.remove.prepare_invoke();
        for k in Self::session_keys(mid, key) {
            inv.key(k);
        }
        inv.arg(server).arg(key);
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let n: i32 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))?;
            Ok(n == 1)
        })
    }

    fn touch(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inv = self.touch.prepare_invoke();
        for k in Self::session_keys(mid, key) {
            inv.key(k);
        }
        inv.arg(server).arg(self.ttl_ms());
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let n: i32 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))?;
            Ok(n == 1)
        })
    }

    fn servers(&self, keys: &[String]) -> BoxFuture<'_, Result<Vec<Option<String>>, StoreError>> {
        let names: Vec<String> = keys.iter().map(|k| key_key(k)).collect();
        let mut conn = self.conn.clone();
        Box::pin(async move {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            // MGET of one key answers a bare value; ask for a list either way.
            redis::cmd("MGET")
                .arg(&names)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))
        })
    }

    fn keys_of(&self, mids: &[i64]) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        let mut pipe = redis::pipe();
        for &m in mids {
            pipe.hgetall(mid_key(m));
        }
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let maps: Vec<HashMap<String, String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))?;
            Ok(maps.into_iter().flatten().collect())
        })
    }
}

/// Room counts per comet in `ol_{server}`.
pub struct RedisOnline {
    conn: ConnectionManager,
    expire: Duration,
    errors: Arc<DependencyErrors>,
}

impl RedisOnline {
    pub fn new(conn: ConnectionManager, expire: Duration) -> Self {
        RedisOnline {
            conn,
            expire,
            errors: DependencyErrors::new(),
        }
    }

    /// Counts failed calls in `errors` (shared with the node's other Redis clients).
    pub fn with_errors(mut self, errors: Arc<DependencyErrors>) -> Self {
        self.errors = errors;
        self
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl OnlineStore for RedisOnline {
    fn put(
        &self,
        server: &str,
        counts: &HashMap<String, i32>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let now = unix_now();
        let mut shards: HashMap<u32, HashMap<String, i32>> = HashMap::new();
        for (room, n) in counts {
            let field = cityhasher::hash::<u32>(room.as_bytes()) % ONLINE_SHARDS;
            shards.entry(field).or_default().insert(room.clone(), *n);
        }
        let key = online_key(server);
        // goim leaves fields of rooms that emptied until the hash expires; replacing the
        // whole hash at once drops them.
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for (field, room_count) in shards {
            let shard = OnlineShard {
                server: server.to_string(),
                room_count,
                updated: now,
            };
            let json = serde_json::to_string(&shard).expect("counts serialize");
            pipe.hset(&key, field.to_string(), json).ignore();
        }
        pipe.pexpire(&key, self.expire.as_millis() as i64).ignore();
        let mut conn = self.conn.clone();
        Box::pin(async move {
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))
        })
    }

    fn get(&self, servers: &[String]) -> BoxFuture<'_, Result<Vec<Report>, StoreError>> {
        let servers = servers.to_vec();
        let mut conn = self.conn.clone();
        Box::pin(async move {
            if servers.is_empty() {
                return Ok(Vec::new());
            }
            // One round trip for every comet's hash.
            let mut pipe = redis::pipe();
            for server in &servers {
                pipe.hgetall(online_key(server));
            }
            let hashes: Vec<HashMap<String, String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.errors, e))?;
            let mut out = Vec::with_capacity(servers.len());
            for (server, fields) in servers.into_iter().zip(hashes) {
                let mut counts = HashMap::new();
                let mut updated = 0;
                for json in fields.values() {
                    if let Ok(shard) = serde_json::from_str::<OnlineShard>(json) {
                        updated = updated.max(shard.updated);
                        counts.extend(shard.room_count);
                    }
                }
                if !fields.is_empty() {
                    out.push(Report {
                        server,
                        counts,
                        age: Duration::from_secs(unix_now().saturating_sub(updated).max(0) as u64),
                    });
                }
            }
            Ok(out)
        })
    }
}

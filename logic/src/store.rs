//! Where logic keeps sessions and room counts. The traits are what a Redis implementation
//! (goim's `mid_{mid}`, `key_{key}`, `ol_{server}` layout) provides in the distributed
//! deployment; the memory implementations are the embedded default.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Which comet holds which key, and which keys a member has.
pub trait SessionStore: Send + Sync + 'static {
    fn add(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Removes the session only if it still points at `server` (a newer login elsewhere stays).
    fn remove(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Refreshes a session; `false` if the key had gone (the caller adds it again, as goim's
    /// Heartbeat). A key now held by another comet is left to it.
    fn touch(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// The server of each key, in order (`None`: unknown key).
    fn servers(&self, keys: &[String]) -> BoxFuture<'_, Result<Vec<Option<String>>, StoreError>>;
    /// Every key of these members, with its server.
    fn keys_of(&self, mids: &[i64]) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>>;
}

/// Sessions in process memory.
#[derive(Debug, Default)]
pub struct MemorySessions {
    inner: Mutex<Sessions>,
}

/// Laid out for a million sessions: each key is stored once (shared by both maps), server
/// names are interned (a few comets hold every session), and a member's usual single key
/// takes no list of its own.
#[derive(Debug, Default)]
struct Sessions {
    /// key → (server index, mid)
    keys: HashMap<Arc<str>, (u32, i64)>,
    /// mid → keys
    mids: HashMap<i64, Keys>,
    /// Interned server names; indexes are never reused.
    servers: Vec<Arc<str>>,
}

/// A member's keys: almost always one.
#[derive(Debug)]
enum Keys {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Keys {
    fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        match self {
            Keys::One(k) => std::slice::from_ref(k).iter(),
            Keys::Many(v) => v.iter(),
        }
    }

    fn add(&mut self, key: Arc<str>) {
        if self.iter().any(|k| *k == key) {
            return;
        }
        match self {
            Keys::One(first) => *self = Keys::Many(vec![first.clone(), key]),
            Keys::Many(v) => v.push(key),
        }
    }

    /// Removes `key`; `true` if none are left.
    fn remove(&mut self, key: &str) -> bool {
        match self {
            Keys::One(k) => &**k == key,
            Keys::Many(v) => {
                v.retain(|k| &**k != key);
                v.is_empty()
            }
        }
    }
}

impl Sessions {
    fn server_index(&mut self, server: &str) -> u32 {
        if let Some(i) = self.servers.iter().position(|s| &**s == server) {
            return i as u32;
        }
        self.servers.push(server.into());
        (self.servers.len() - 1) as u32
    }

    fn server_is(&self, index: u32, server: &str) -> bool {
        self.servers
            .get(index as usize)
            .is_some_and(|s| &**s == server)
    }

    fn server_name(&self, index: u32) -> String {
        self.servers
            .get(index as usize)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    fn remove_from_mid(&mut self, mid: i64, key: &str) {
        if let Some(keys) = self.mids.get_mut(&mid)
            && keys.remove(key)
        {
            self.mids.remove(&mid);
        }
    }
}

impl MemorySessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionStore for MemorySessions {
    fn add(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut s = self.lock();
        let server = s.server_index(server);
        let key: Arc<str> = match s.keys.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        if let Some((_, old_mid)) = s.keys.insert(key.clone(), (server, mid))
            && old_mid != mid
        {
            s.remove_from_mid(old_mid, &key);
        }
        if mid > 0 {
            match s.mids.get_mut(&mid) {
                Some(keys) => keys.add(key),
                None => {
                    s.mids.insert(mid, Keys::One(key));
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn remove(&self, mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut s = self.lock();
        let has = s
            .keys
            .get(key)
            .is_some_and(|&(srv, m)| s.server_is(srv, server) && m == mid);
        if has {
            s.keys.remove(key);
            s.remove_from_mid(mid, key);
        }
        Box::pin(async move { Ok(has) })
    }

    fn touch(&self, _mid: i64, key: &str, server: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let s = self.lock();
        let _ = server; // nothing expires in memory: a present key needs no refresh
        let has = s.keys.contains_key(key);
        Box::pin(async move { Ok(has) })
    }

    fn servers(&self, keys: &[String]) -> BoxFuture<'_, Result<Vec<Option<String>>, StoreError>> {
        let s = self.lock();
        let out = keys
            .iter()
            .map(|k| s.keys.get(k.as_str()).map(|&(srv, _)| s.server_name(srv)))
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn keys_of(&self, mids: &[i64]) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        let s = self.lock();
        let mut out = Vec::new();
        for mid in mids {
            for k in s.mids.get(mid).into_iter().flat_map(Keys::iter) {
                if let Some(&(srv, _)) = s.keys.get(k) {
                    out.push((k.to_string(), s.server_name(srv)));
                }
            }
        }
        Box::pin(async move { Ok(out) })
    }
}

/// Where comets' room counts are shared between logic instances (Redis `ol_{server}` when
/// distributed). Without one, a single logic keeps them in its [`OnlineTable`].
pub trait OnlineStore: Send + Sync + 'static {
    /// Stores one comet's room counts, replacing its last report.
    fn put(
        &self,
        server: &str,
        counts: &HashMap<String, i32>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The last report of each of these comets that has one.
    fn get(&self, servers: &[String]) -> BoxFuture<'_, Result<Vec<Report>, StoreError>>;
}

/// One comet's room counts and how old they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub server: String,
    pub counts: HashMap<String, i32>,
    pub age: Duration,
}

/// Room counts reported by each comet (goim's RenewOnline), summed over comets.
/// A comet's last report: room → members, and when it came.
type Entry = (HashMap<String, i32>, Instant);

#[derive(Debug, Default)]
pub struct OnlineTable {
    servers: Mutex<HashMap<String, Entry>>,
}

impl OnlineTable {
    /// Stores one comet's counts and returns the cluster's.
    pub fn renew(
        &self,
        server: &str,
        counts: HashMap<String, i32>,
        expire: Duration,
    ) -> HashMap<String, i32> {
        let mut s = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(server.to_string(), (counts, Instant::now()));
        s.retain(|_, (_, at)| at.elapsed() < expire);
        let mut total: HashMap<String, i32> = HashMap::new();
        for (counts, _) in s.values() {
            for (room, n) in counts {
                *total.entry(room.clone()).or_default() += n;
            }
        }
        total
    }

    /// Replaces every comet's counts with `reports` (read from a shared [`OnlineStore`]).
    pub fn replace(&self, reports: Vec<Report>) {
        let now = Instant::now();
        let mut s = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        s.clear();
        for r in reports {
            let at = now.checked_sub(r.age).unwrap_or(now);
            s.insert(r.server, (r.counts, at));
        }
    }

    /// The cluster's counts, leaving out comets silent for longer than `expire`.
    pub fn totals(&self, expire: Duration) -> HashMap<String, i32> {
        let s = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let mut total: HashMap<String, i32> = HashMap::new();
        for (counts, at) in s.values() {
            if at.elapsed() < expire {
                for (room, n) in counts {
                    *total.entry(room.clone()).or_default() += n;
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_map_keys_and_mids() {
        let s = MemorySessions::default();
        s.add(1, "a", "c1").await.unwrap();
        s.add(1, "b", "c2").await.unwrap();
        s.add(0, "anon", "c1").await.unwrap();
        let got = s
            .servers(&["a".into(), "x".into(), "anon".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some("c1".into()), None, Some("c1".into())]);
        let mut keys = s.keys_of(&[1, 2]).await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            vec![("a".into(), "c1".into()), ("b".into(), "c2".into())]
        );
        // A stale disconnect from another comet leaves the newer session alone.
        s.add(1, "a", "c3").await.unwrap();
        assert!(!s.remove(1, "a", "c1").await.unwrap());
        assert!(s.touch(1, "a", "c3").await.unwrap());
        assert!(s.remove(1, "a", "c3").await.unwrap());
        assert_eq!(
            s.keys_of(&[1]).await.unwrap(),
            vec![("b".into(), "c2".into())]
        );
        // A key taken over by another member leaves the first member's list.
        s.add(2, "b", "c1").await.unwrap();
        assert!(s.keys_of(&[1]).await.unwrap().is_empty());
        assert_eq!(
            s.keys_of(&[2]).await.unwrap(),
            vec![("b".into(), "c1".into())]
        );
        // Adding the same session twice keeps one entry.
        s.add(2, "b", "c1").await.unwrap();
        s.add(2, "c", "c1").await.unwrap();
        assert_eq!(s.keys_of(&[2]).await.unwrap().len(), 2);
        assert!(s.remove(2, "b", "c1").await.unwrap());
        assert!(s.remove(2, "c", "c1").await.unwrap());
        assert!(s.keys_of(&[2]).await.unwrap().is_empty());
    }

    #[test]
    fn online_counts_sum_over_servers_and_expire() {
        let t = OnlineTable::default();
        let long = Duration::from_secs(60);
        t.renew("c1", HashMap::from([("live://1".into(), 2)]), long);
        let all = t.renew(
            "c2",
            HashMap::from([("live://1".into(), 3), ("live://2".into(), 1)]),
            long,
        );
        assert_eq!(all["live://1"], 5);
        assert_eq!(all["live://2"], 1);
        assert!(t.totals(Duration::ZERO).is_empty());
    }
}

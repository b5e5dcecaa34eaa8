//! The key directory: which worker holds the connection authenticated with a key. Sharded into
//! buckets by CityHash32(key) % size, the hash goim uses, so bucket numbers match goim's.
//!
//! Workers own their connections; the directory is the one structure they share, touched only
//! on auth, on close and by key pushes (never by room pushes or heartbeats).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A connection's address: its worker and its id inside that worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub worker: u16,
    pub id: ConnId,
}

/// A worker-local connection id: slab index plus a generation, so an id is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

impl ConnRef {
    /// `ConnectReq.conn` / `DisconnectReq.conn`: unique within this comet process.
    pub fn label(&self) -> String {
        format!("{}.{}.{}", self.worker, self.id.index, self.id.generation)
    }
}

impl ConnId {
    /// Packed into an epoll event's data.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub fn from_u64(v: u64) -> Self {
        ConnId {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// goim's bucket function: `CityHash32(key) % size`.
pub fn bucket_of(key: &str, size: usize) -> usize {
    cityhasher::hash::<u32>(key.as_bytes()) as usize % size
}

/// One shard of the key directory.
type Shard = Mutex<HashMap<Arc<str>, ConnRef>>;

#[derive(Debug)]
pub struct Buckets {
    shards: Box<[Shard]>,
    ips: Mutex<HashMap<IpAddr, u32>>,
}

impl Buckets {
    pub fn new(size: usize) -> Self {
        Buckets {
            shards: (0..size).map(|_| Mutex::new(HashMap::new())).collect(),
            ips: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, ConnRef>> {
        self.shards[bucket_of(key, self.shards.len())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `conn` under `key`; returns the connection it replaces (to be kicked).
    pub fn put(&self, key: &Arc<str>, conn: ConnRef) -> Option<ConnRef> {
        self.shard(key).insert(key.clone(), conn)
    }

    /// Removes `key` only if it still points at `conn` (a kicked connection must not remove
    /// the one that replaced it).
    pub fn remove(&self, key: &str, conn: ConnRef) -> bool {
        let mut shard = self.shard(key);
        if shard.get(key) == Some(&conn) {
            shard.remove(key);
            true
        } else {
            false
        }
    }

    pub fn get(&self, key: &str) -> Option<ConnRef> {
        self.shard(key).get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn add_ip(&self, ip: IpAddr) {
        *self
            .ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert(0) += 1;
    }

    pub fn remove_ip(&self, ip: IpAddr) {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&ip);
            }
        }
    }

    /// Distinct client addresses with an authenticated connection.
    pub fn ip_count(&self) -> usize {
        self.ips.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(worker: u16, index: u32) -> ConnRef {
        ConnRef {
            worker,
            id: ConnId {
                index,
                generation: 1,
            },
        }
    }

    #[test]
    fn cityhash32_matches_goims_bucket_choice() {
        // CityHash32 reference values (Google's city.cc), as goim's zhenjl/cityhash computes.
        assert_eq!(cityhasher::hash::<u32>(b""), 0xdc56d17a);
        assert_eq!(bucket_of("", 32), 0xdc56d17a % 32);
    }

    #[test]
    fn put_replaces_and_returns_the_old_connection() {
        let b = Buckets::new(4);
        let key: Arc<str> = "k".into();
        assert_eq!(b.put(&key, c(0, 1)), None);
        assert_eq!(b.put(&key, c(1, 2)), Some(c(0, 1)));
        // The kicked connection's close must not remove its successor.
        assert!(!b.remove("k", c(0, 1)));
        assert_eq!(b.get("k"), Some(c(1, 2)));
        assert!(b.remove("k", c(1, 2)));
        assert!(b.is_empty());
    }

    #[test]
    fn counts_distinct_ips() {
        let b = Buckets::new(1);
        let ip: IpAddr = [127, 0, 0, 2].into();
        b.add_ip(ip);
        b.add_ip(ip);
        b.add_ip([127, 0, 0, 3].into());
        assert_eq!(b.ip_count(), 2);
        b.remove_ip(ip);
        assert_eq!(b.ip_count(), 2);
        b.remove_ip(ip);
        assert_eq!(b.ip_count(), 1);
    }
}

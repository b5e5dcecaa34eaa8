//! The device table in memory: the all-in-one's. 40 bytes per connection beside the key's
//! bytes (an idle IM connection costs about 630 B in all, goim's session included); one
//! mutex, held for a map operation and never across an await.

use super::{Device, DeviceRef, Displaced, MAX_PLATFORM, displaces};
use crate::config::MultiLogin;
use starling_proto::op::Codec;
use std::collections::HashMap;
use std::sync::Mutex;

/// One connection as the table keeps it: 40 bytes and one allocation (the key), so an idle
/// IM connection costs little beside goim's session (issue 12's budget: 640 B in all).
#[derive(Debug)]
struct Entry {
    key: Box<str>,
    /// CityHash64 of the connection id (`ConnectReq.conn`), folded to 32 bits (it only tells
    /// one key's connections apart); 0 when the comet sent none.
    conn: u32,
    /// When it connected, seconds after the Unix epoch (u32 lasts until 2106).
    since_s: u32,
    /// Index into `Table::servers` (comets are few; their names are interned).
    server: u16,
    codec: u8,
    platform_len: u8,
    platform: [u8; MAX_PLATFORM],
}

impl Entry {
    fn platform(&self) -> &str {
        std::str::from_utf8(&self.platform[..usize::from(self.platform_len)]).unwrap_or("")
    }
}

/// A user's connections: almost always one, kept inline.
#[derive(Debug)]
enum Devs {
    One(Entry),
    Many(Vec<Entry>),
}

impl Devs {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Devs::One(e) => std::slice::from_ref(e),
            Devs::Many(v) => v,
        }
    }

    fn into_vec(self) -> Vec<Entry> {
        match self {
            Devs::One(e) => vec![e],
            Devs::Many(v) => v,
        }
    }

    fn from_vec(mut v: Vec<Entry>) -> Option<Devs> {
        match v.len() {
            0 => None,
            1 => v.pop().map(Devs::One),
            _ => Some(Devs::Many(v)),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    by_mid: HashMap<i64, Devs>,
    servers: Vec<std::sync::Arc<str>>,
}

#[derive(Debug, Default)]
pub struct MemoryDevices {
    table: Mutex<Table>,
}

fn conn_hash(conn: &str) -> u32 {
    if conn.is_empty() {
        0
    } else {
        let h = cityhasher::hash::<u64>(conn.as_bytes());
        ((h >> 32) as u32 ^ h as u32) | 1
    }
}

fn codec_of(b: u8) -> Codec {
    Codec::from_im(i32::from(b)).unwrap_or(Codec::Protobuf)
}

impl Table {
    fn server_index(&mut self, server: &str) -> u16 {
        if let Some(i) = self.servers.iter().position(|s| &**s == server) {
            return i as u16;
        }
        // Comet names come from the comets' own configuration, a handful per cluster.
        self.servers.push(server.into());
        (self.servers.len() - 1).min(usize::from(u16::MAX)) as u16
    }

    fn entry(&mut self, d: &Device) -> Entry {
        let mut platform = [0u8; MAX_PLATFORM];
        let mut n = d.platform.len().min(MAX_PLATFORM);
        while !d.platform.is_char_boundary(n) {
            n -= 1;
        }
        platform[..n].copy_from_slice(&d.platform.as_bytes()[..n]);
        Entry {
            key: d.key.as_str().into(),
            conn: conn_hash(&d.conn),
            since_s: (d.since_ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32,
            server: self.server_index(&d.server),
            codec: d.codec as u8,
            platform_len: n as u8,
            platform,
        }
    }

    fn device(&self, mid: i64, e: &Entry) -> Device {
        Device {
            mid,
            key: e.key.to_string(),
            platform: e.platform().to_string(),
            codec: codec_of(e.codec),
            server: self.servers[e.server as usize].to_string(),
            conn: String::new(),
            since_ms: i64::from(e.since_s) * 1000,
        }
    }
}

impl MemoryDevices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`super::DeviceTable::register`]. A platform is kept to its first [`MAX_PLATFORM`]
    /// bytes.
    pub fn register(&self, dev: Device, policy: MultiLogin) -> Displaced {
        let mut t = self.lock();
        let new = t.entry(&dev);
        let old = t
            .by_mid
            .remove(&dev.mid)
            .map(Devs::into_vec)
            .unwrap_or_default();
        let mut out = Displaced::default();
        let mut kept = Vec::with_capacity(old.len() + 1);
        for e in old {
            if *e.key == *dev.key {
                if e.server != new.server {
                    out.same_key = Some(t.device(dev.mid, &e));
                }
                continue;
            }
            if displaces(policy, e.platform(), new.platform()) {
                out.kicked.push(t.device(dev.mid, &e));
            } else {
                kept.push(e);
            }
        }
        kept.push(new);
        if let Some(d) = Devs::from_vec(kept) {
            t.by_mid.insert(dev.mid, d);
        }
        out
    }

    /// Removes the connection `key` of `mid` if it is still the one on `server` with id
    /// `conn` (a newer login of the same key, elsewhere or on the same comet, stays; an empty
    /// `conn`, from a goim comet, matches any). `true` if removed.
    pub fn remove(&self, mid: i64, key: &str, server: &str, conn: &str) -> bool {
        let mut t = self.lock();
        let conn = conn_hash(conn);
        let Some(server) = t.servers.iter().position(|s| &**s == server) else {
            return false;
        };
        let Some(devs) = t.by_mid.remove(&mid) else {
            return false;
        };
        let mut v = devs.into_vec();
        let before = v.len();
        v.retain(|e| {
            !(*e.key == *key && e.server as usize == server && (conn == 0 || e.conn == conn))
        });
        let removed = v.len() != before;
        if let Some(d) = Devs::from_vec(v) {
            t.by_mid.insert(mid, d);
        }
        removed
    }

    /// Removes and returns `mid`'s connections matching `platform` and `key` (empty = any).
    pub fn take(&self, mid: i64, platform: &str, key: &str) -> Vec<Device> {
        let mut t = self.lock();
        let Some(devs) = t.by_mid.remove(&mid) else {
            return Vec::new();
        };
        let (taken, kept): (Vec<Entry>, Vec<Entry>) = devs.into_vec().into_iter().partition(|e| {
            (platform.is_empty() || e.platform() == platform) && (key.is_empty() || *e.key == *key)
        });
        if let Some(d) = Devs::from_vec(kept) {
            t.by_mid.insert(mid, d);
        }
        taken.iter().map(|e| t.device(mid, e)).collect()
    }

    pub fn get(&self, mid: i64, key: &str) -> Option<Device> {
        let t = self.lock();
        let e = t
            .by_mid
            .get(&mid)?
            .as_slice()
            .iter()
            .find(|e| *e.key == *key)?;
        Some(t.device(mid, e))
    }

    /// Every connection of these users.
    pub fn of_users(&self, mids: &[i64]) -> Vec<Device> {
        let mut out = Vec::new();
        self.visit(mids, |d| {
            out.push(Device {
                mid: d.mid,
                key: d.key.to_string(),
                platform: d.platform.to_string(),
                codec: d.codec,
                server: d.server.to_string(),
                conn: String::new(),
                since_ms: d.since_ms,
            })
        });
        out
    }

    /// Calls `f` for every connection of these users, without copying them out (the
    /// delivery path); `f` runs under the table's lock, so it must not block.
    pub fn visit(&self, mids: &[i64], mut f: impl FnMut(DeviceRef<'_>)) {
        let t = self.lock();
        for &mid in mids {
            let Some(devs) = t.by_mid.get(&mid) else {
                continue;
            };
            for e in devs.as_slice() {
                f(DeviceRef {
                    mid,
                    key: &e.key,
                    platform: e.platform(),
                    codec: codec_of(e.codec),
                    server: &t.servers[e.server as usize],
                    since_ms: i64::from(e.since_s) * 1000,
                });
            }
        }
    }

    /// Connected IM devices, all users.
    pub fn len(&self) -> usize {
        self.lock()
            .by_mid
            .values()
            .map(|d| d.as_slice().len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device as the table hands it back (it keeps only a hash of the connection id).
    fn dev(key: &str, platform: &str, server: &str) -> Device {
        Device {
            mid: 1,
            key: key.into(),
            platform: platform.into(),
            codec: Codec::Protobuf,
            server: server.into(),
            conn: String::new(),
            since_ms: 0,
        }
    }

    /// A device registering through connection `conn`.
    fn conn(key: &str, server: &str, conn: &str) -> Device {
        Device {
            conn: conn.into(),
            ..dev(key, "ios", server)
        }
    }

    #[test]
    fn policies_displace_as_documented() {
        let t = MemoryDevices::default();
        assert_eq!(
            t.register(dev("a", "ios", "c1"), MultiLogin::OnePerPlatform),
            Displaced::default()
        );
        assert_eq!(
            t.register(dev("b", "android", "c1"), MultiLogin::OnePerPlatform),
            Displaced::default()
        );
        let d = t.register(dev("c", "ios", "c1"), MultiLogin::OnePerPlatform);
        assert_eq!(d.kicked, vec![dev("a", "ios", "c1")]);
        // The same key again: never a kick; on another comet the old one is named.
        let d = t.register(dev("c", "ios", "c2"), MultiLogin::OnePerPlatform);
        assert_eq!(
            d,
            Displaced {
                same_key: Some(dev("c", "ios", "c1")),
                kicked: vec![]
            }
        );
        assert_eq!(t.len(), 2);
        let d = t.register(dev("d", "web", "c1"), MultiLogin::Single);
        assert_eq!(d.kicked.len(), 2);
        assert_eq!(t.len(), 1);
        let d = t.register(dev("e", "mac", "c1"), MultiLogin::OnePerClass);
        assert!(d.kicked.is_empty(), "web and desktop are different classes");
        let d = t.register(dev("f", "windows", "c1"), MultiLogin::OnePerClass);
        assert_eq!(d.kicked, vec![dev("e", "mac", "c1")]);
        let d = t.register(dev("g", "windows", "c1"), MultiLogin::Multi);
        assert!(d.kicked.is_empty());
    }

    #[test]
    fn removal_only_of_the_connection_on_that_comet() {
        let t = MemoryDevices::default();
        t.register(conn("a", "c2", "a@c2"), MultiLogin::Multi);
        assert!(
            !t.remove(1, "a", "c1", "a@c1"),
            "a late disconnect from the old comet"
        );
        assert!(t.get(1, "a").is_some());
        // The same key reconnected on the same comet: the old connection's late disconnect
        // (another conn id) leaves the new one.
        t.register(conn("a", "c2", "second"), MultiLogin::Multi);
        assert!(!t.remove(1, "a", "c2", "a@c2"));
        assert!(t.get(1, "a").is_some());
        assert!(t.remove(1, "a", "c2", "second"));
        assert!(t.is_empty());
    }

    #[test]
    fn an_entry_is_compact() {
        // An idle IM connection's share of the table (issue 12: 640 B per IM connection in
        // all, goim's session included): the entry inline in the map, and the key's bytes.
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert!(
            std::mem::size_of::<Devs>() <= 64,
            "{}",
            std::mem::size_of::<Devs>()
        );
    }

    #[test]
    fn long_platforms_are_kept_to_their_first_bytes_on_a_char_boundary() {
        let t = MemoryDevices::default();
        t.register(
            Device {
                platform: "ééééééé".into(),
                ..dev("k", "", "c")
            },
            MultiLogin::Multi,
        );
        assert_eq!(t.get(1, "k").unwrap().platform, "éééééé");
    }
}

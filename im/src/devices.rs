//! The device table: every IM-opted-in connection, by user (reference im.md §7.6). It routes
//! deliveries (which comet, which codec) and applies the multi-login policy. goim's own
//! session layout (`mid_`, `key_`) is left as goim reads it; plain goim connections of the same
//! user are neither listed here nor kicked.
//!
//! In memory: the all-in-one's (and a single logic's) table. Several logic nodes share it in
//! Redis (issue 13).

use crate::config::MultiLogin;
use starling_proto::op::Codec;
use std::collections::HashMap;
use std::sync::Mutex;

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
    /// disconnect from that of an older one with the same key.
    pub conn: String,
    /// When it connected, ms since the Unix epoch.
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

#[derive(Debug, Default)]
pub struct Devices {
    by_mid: Mutex<HashMap<i64, Vec<Device>>>,
}

/// The class `one_per_class` counts in (OpenIM's `AllLoginButSameClassKick`).
pub fn platform_class(platform: &str) -> &str {
    match platform.to_ascii_lowercase().as_str() {
        "ios" | "android" | "ipad" | "mobile" => "mobile",
        "windows" | "mac" | "macos" | "linux" | "pc" | "desktop" => "desktop",
        "web" | "h5" | "browser" => "web",
        _ => platform,
    }
}

impl Devices {
    /// Adds `dev`, removing and returning what `policy` displaces. The same key is never
    /// kicked: on the same comet comet itself replaces it silently, elsewhere it is returned
    /// in `same_key`.
    pub fn register(&self, dev: Device, policy: MultiLogin) -> Displaced {
        let mut all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(dev.mid).or_default();
        let mut out = Displaced::default();
        let mut kept = Vec::with_capacity(list.len() + 1);
        for d in list.drain(..) {
            if d.key == dev.key {
                if d.server != dev.server {
                    out.same_key = Some(d);
                }
                continue;
            }
            let replaced = match policy {
                MultiLogin::Multi => false,
                MultiLogin::OnePerPlatform => d.platform == dev.platform,
                MultiLogin::OnePerClass => {
                    platform_class(&d.platform) == platform_class(&dev.platform)
                }
                MultiLogin::Single => true,
            };
            if replaced {
                out.kicked.push(d);
            } else {
                kept.push(d);
            }
        }
        kept.push(dev);
        *list = kept;
        out
    }

    /// Removes the connection `key` of `mid` if it is still the one on `server` with id
    /// `conn` (a newer login of the same key, elsewhere or on the same comet, stays; an empty
    /// `conn`, from a goim comet, matches any). `true` if removed.
    pub fn remove(&self, mid: i64, key: &str, server: &str, conn: &str) -> bool {
        let mut all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = all.get_mut(&mid) else {
            return false;
        };
        let before = list.len();
        list.retain(|d| {
            !(d.key == key && d.server == server && (conn.is_empty() || d.conn == conn))
        });
        let removed = list.len() != before;
        if list.is_empty() {
            all.remove(&mid);
        }
        removed
    }

    /// Removes and returns `mid`'s connections matching `platform` and `key` (empty = any).
    pub fn take(&self, mid: i64, platform: &str, key: &str) -> Vec<Device> {
        let mut all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = all.get_mut(&mid) else {
            return Vec::new();
        };
        let (taken, kept): (Vec<Device>, Vec<Device>) = list.drain(..).partition(|d| {
            (platform.is_empty() || d.platform == platform) && (key.is_empty() || d.key == key)
        });
        *list = kept;
        if list.is_empty() {
            all.remove(&mid);
        }
        taken
    }

    pub fn get(&self, mid: i64, key: &str) -> Option<Device> {
        let all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&mid)?.iter().find(|d| d.key == key).cloned()
    }

    /// Every connection of these users.
    pub fn of_users(&self, mids: &[i64]) -> Vec<Device> {
        let all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        mids.iter()
            .filter_map(|m| all.get(m))
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// Connected IM devices, all users.
    pub fn len(&self) -> usize {
        let all = self.by_mid.lock().unwrap_or_else(|e| e.into_inner());
        all.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(key: &str, platform: &str, server: &str) -> Device {
        Device {
            mid: 1,
            key: key.into(),
            platform: platform.into(),
            codec: Codec::Protobuf,
            server: server.into(),
            conn: format!("{key}@{server}"),
            since_ms: 0,
        }
    }

    #[test]
    fn policies_displace_as_documented() {
        let t = Devices::default();
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
        let t = Devices::default();
        t.register(dev("a", "ios", "c2"), MultiLogin::Multi);
        assert!(
            !t.remove(1, "a", "c1", "a@c1"),
            "a late disconnect from the old comet"
        );
        assert!(t.get(1, "a").is_some());
        // The same key reconnected on the same comet: the old connection's late disconnect
        // (another conn id) leaves the new one.
        let mut again = dev("a", "ios", "c2");
        again.conn = "second".into();
        t.register(again, MultiLogin::Multi);
        assert!(!t.remove(1, "a", "c2", "a@c2"));
        assert!(t.get(1, "a").is_some());
        assert!(t.remove(1, "a", "c2", "second"));
        assert!(t.is_empty());
    }
}

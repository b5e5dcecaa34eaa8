//! `starling-bench xmpp ...`: issue 16's IM scenarios against an XMPP server (ejabberd, as
//! `tools/bench-peers.sh im` starts it with `tools/ejabberd/ejabberd.yml`), the same shapes as
//! `starling-bench im ...` runs against Starling, so the two are compared with one client:
//!
//! - `p2p`: sender → receiver pairs, one message in flight per sender; a message counts when
//!   the server acknowledged it (XEP-0198 `<a h>` covering it, the counterpart of Starling's
//!   `SendAck`) and the receiver got it.
//! - `group`: a MUC room (XEP-0045) with every member joined, paced senders.
//! - `offline`: messages stored for a user who has never been online (`mod_offline`), then
//!   the user connects: until it holds them all, in order.
//! - `idle`: connected, available, idle users: the server's memory per user.
//!
//! Every message body is `{sender index}|{k}|{send time, ns}` (k counts per sender from 0),
//! so a receiver accounts for loss, duplicates and order per sender.

mod group;
mod offline;
mod p2p;
pub mod stream;

use crate::sys;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use stream::{Login, Xmpp, XmppError};
use tokio::sync::Semaphore;

#[derive(Debug, Subcommand)]
pub enum XmppCmd {
    /// Pairs of senders and receivers: throughput (`--rate 0`) or latency at a fixed rate.
    P2p(p2p::P2pArgs),
    /// One MUC room with every member joined, paced senders: delivery latency to all.
    Group(group::GroupArgs),
    /// A user misses N messages, then connects: time until it holds them all, in order.
    Offline(offline::OfflineArgs),
    /// N users connected and available, idle: the server's memory per user.
    Idle(offline::IdleArgs),
}

pub async fn run(cmd: XmppCmd) -> anyhow::Result<serde_json::Value> {
    Ok(match cmd {
        XmppCmd::P2p(a) => serde_json::to_value(p2p::run(a).await?)?,
        XmppCmd::Group(a) => serde_json::to_value(group::run(a).await?)?,
        XmppCmd::Offline(a) => serde_json::to_value(offline::run(a).await?)?,
        XmppCmd::Idle(a) => serde_json::to_value(offline::idle(a).await?)?,
    })
}

/// What every XMPP scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's c2s address (plain TCP).
    #[arg(long, default_value = "127.0.0.1:15222")]
    pub addr: SocketAddr,
    /// The XMPP domain (ejabberd's `hosts`).
    #[arg(long, default_value = "bench.local")]
    pub domain: String,
    /// The server's pid (ejabberd's `beam.smp`), for its CPU time and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A name for the run in the JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
    /// First user number of the run; 0 picks one from the clock, so repeated runs against
    /// one server use fresh accounts (registered in-band by the run).
    #[arg(long, default_value_t = 0)]
    pub uid_base: i64,
    /// Logins in flight while connecting.
    #[arg(long, default_value_t = 100)]
    pub connects: usize,
}

/// Every account's password (the bench registers its accounts itself).
pub const PASSWORD: &str = "bench";

impl Common {
    pub fn uid_base(&self) -> i64 {
        crate::im::uid_base(self.uid_base)
    }

    /// The bare JID of user `uid`.
    pub fn jid(&self, uid: i64) -> String {
        format!("u{uid}@{}", self.domain)
    }

    /// Registers (XEP-0077) and logs in user `uid`.
    pub async fn open(&self, uid: i64) -> Result<Xmpp, XmppError> {
        let user = format!("u{uid}");
        Xmpp::open(&Login {
            addr: self.addr,
            domain: &self.domain,
            user: &user,
            password: PASSWORD,
            register: true,
        })
        .await
    }
}

/// Opens one stream per uid, `common.connects` at a time, each available (initial presence
/// sent and acknowledged).
pub async fn open_all(common: &Common, uids: &[i64]) -> anyhow::Result<Vec<Xmpp>> {
    let gate = Rc::new(Semaphore::new(common.connects.max(1)));
    let common = Rc::new(common.clone());
    let mut tasks = Vec::with_capacity(uids.len());
    for &uid in uids {
        let (gate, common) = (gate.clone(), common.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            let mut x = common.open(uid).await?;
            x.available().await?;
            x.request_ack().await?;
            x.until_acked(|_| {}).await?;
            x.shrink();
            Ok::<_, XmppError>(x)
        }));
    }
    let mut out = Vec::with_capacity(uids.len());
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await? {
            Ok(x) => out.push(x),
            Err(e) => *failed.entry(e.to_string()).or_default() += 1,
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} logins failed: {failed:?}",
            failed.values().sum::<u64>(),
            uids.len()
        );
    }
    Ok(out)
}

/// The body the scenarios send: `{from}|{k}|{now_ns}`.
pub fn body(from: usize, k: u64) -> String {
    format!("{from}|{k}|{}", sys::now_ns())
}

/// `(from, k, sent_ns)` of a bench body.
pub fn read_body(b: &str) -> Option<(usize, u64, u64)> {
    let mut it = b.split('|');
    let from = it.next()?.parse().ok()?;
    let k = it.next()?.parse().ok()?;
    let ns = it.next()?.parse().ok()?;
    Some((from, k, ns))
}

/// Per sender as one receiver sees it: next expected k, duplicates, out of order.
#[derive(Default, Clone)]
pub struct Order {
    pub seen: std::collections::HashSet<u64>,
    pub max: Option<u64>,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Order {
    /// Records k; false when it is a duplicate.
    pub fn record(&mut self, k: u64) -> bool {
        if !self.seen.insert(k) {
            self.duplicates += 1;
            return false;
        }
        if self.max.is_some_and(|m| k < m) {
            self.out_of_order += 1;
        }
        self.max = Some(self.max.map_or(k, |m| m.max(k)));
        true
    }
}

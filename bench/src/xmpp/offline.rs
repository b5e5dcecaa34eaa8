//! Offline delivery and idle memory over XMPP.
//!
//! `offline`: a user is registered and has never been online; another sends it `messages`
//! chat messages (all acknowledged, XEP-0198), which the server stores (`mod_offline`). Then
//! the user connects: measured from the start of the TCP connect until it holds all of them,
//! in order (SASL, bind, stream management, initial presence, which makes ejabberd hand over
//! the stored messages). The same shape as `starling-bench im sync`.
//!
//! `idle`: `users` accounts registered first (streams of their own, closed), then the server's
//! RSS; then every user connected and available, idle; the RSS again: growth per user.

use super::p2p::chat_body;
use super::stream::{Login, Xmpp};
use super::{Common, PASSWORD, body, open_all};
use crate::sys::{self, now_ns};
use anyhow::{bail, ensure};
use clap::Args;
use serde::Serialize;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Args)]
pub struct OfflineArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages the user misses.
    #[arg(long, short = 'm', default_value_t = 2000)]
    pub messages: u64,
    /// Repetitions, each with new users.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
}

#[derive(Debug, Serialize)]
pub struct OfflineRep {
    /// Start of the TCP connect until every message is held in order.
    pub total_ms: f64,
    /// Connect, SASL, bind and stream management, until initial presence is sent.
    pub login_ms: f64,
    pub messages: u64,
}

#[derive(Debug, Serialize)]
pub struct OfflineResult {
    pub scenario: &'static str,
    pub server: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub messages: u64,
    /// How long sending (and having acknowledged) the missed messages took, per repetition.
    pub fill_s: Vec<f64>,
    pub reps: Vec<OfflineRep>,
}

fn login<'a>(c: &'a Common, user: &'a str) -> Login<'a> {
    Login {
        addr: c.addr,
        domain: &c.domain,
        user,
        password: PASSWORD,
        register: false,
    }
}

pub async fn run(args: OfflineArgs) -> anyhow::Result<OfflineResult> {
    let load1_before = sys::load1();
    let c = &args.common;
    let base = c.uid_base();
    let mut fill_s = Vec::new();
    let mut reps = Vec::new();
    for rep in 0..args.reps as i64 {
        let (sender, receiver) = (base + 1 + 2 * rep, base + 2 + 2 * rep);
        let ruser = format!("u{receiver}");
        Xmpp::register(&Login {
            register: true,
            ..login(c, &ruser)
        })
        .await?;
        // Fill: every message sent, then one `<r/>`; the `<a h>` covers them all.
        let t = now_ns();
        let mut s = c.open(sender).await?;
        let to = c.jid(receiver);
        for k in 0..args.messages {
            s.send_stanza(&format!(
                "<message to='{to}' id='o{k}' type='chat'><body>{}</body></message>",
                body(0, k)
            ))
            .await?;
            if k % 100 == 99 {
                s.request_ack().await?;
            }
        }
        s.request_ack().await?;
        s.until_acked(|_| {}).await?;
        s.close().await?;
        fill_s.push((now_ns() - t) as f64 / 1e9);
        // Let the server finish storing (the ack comes when the stanza is routed).
        tokio::time::sleep(Duration::from_millis(500)).await;

        let t0 = now_ns();
        let mut r = Xmpp::open(&login(c, &ruser)).await?;
        r.available().await?;
        let login_ms = (now_ns() - t0) as f64 / 1e6;
        let mut next = 0u64;
        while next < args.messages {
            let el = r.next().await?;
            let Some((_, k, _)) = chat_body(&el) else {
                continue;
            };
            ensure!(
                k == next,
                "rep {rep}: message {k} arrived where {next} was due"
            );
            next += 1;
        }
        let total_ms = (now_ns() - t0) as f64 / 1e6;
        let _ = r.close().await;
        eprintln!(
            "offline rep {rep}: {} messages held in order {total_ms:.1} ms after the connect (login {login_ms:.1} ms)",
            args.messages
        );
        reps.push(OfflineRep {
            total_ms,
            login_ms,
            messages: args.messages,
        });
    }
    Ok(OfflineResult {
        scenario: "xmpp-offline",
        server: "ejabberd",
        label: c.label.clone(),
        load1_before,
        messages: args.messages,
        fill_s,
        reps,
    })
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, short = 'n', default_value_t = 5000)]
    pub users: u64,
    /// After the last login, how long to wait before reading the RSS.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub settle: Duration,
}

#[derive(Debug, Serialize)]
pub struct IdleResult {
    pub scenario: &'static str,
    pub server: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub users: u64,
    pub register_s: f64,
    pub connect_s: f64,
    /// The server's RSS with every account registered and none connected.
    pub rss_before: u64,
    pub rss_after: u64,
    pub bytes_per_user: f64,
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<IdleResult> {
    let load1_before = sys::load1();
    let c = Rc::new(args.common.clone());
    let Some(pid) = c.pid else {
        bail!("--pid is required: the server's pid (ejabberd's beam.smp), whose RSS is measured");
    };
    let base = c.uid_base();
    let uids: Vec<i64> = (0..args.users as i64).map(|i| base + 1 + i).collect();
    let t = now_ns();
    let gate = Rc::new(Semaphore::new(c.connects.max(1)));
    let mut tasks = Vec::new();
    for &uid in &uids {
        let (c, gate) = (c.clone(), gate.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            let user = format!("u{uid}");
            Xmpp::register(&Login {
                register: true,
                ..login(&c, &user)
            })
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let register_s = (now_ns() - t) as f64 / 1e9;
    tokio::time::sleep(args.settle).await;
    let rss_before = sys::rss_bytes(pid)?;
    let t = now_ns();
    let streams = open_all(&c, &uids).await?;
    let connect_s = (now_ns() - t) as f64 / 1e9;
    tokio::time::sleep(args.settle).await;
    let rss_after = sys::rss_bytes(pid)?;
    let bytes_per_user = (rss_after as f64 - rss_before as f64) / args.users as f64;
    eprintln!(
        "{} idle XMPP users: server RSS {:.1} → {:.1} MiB, {bytes_per_user:.0} B per user (registered in {register_s:.1}s, connected in {connect_s:.1}s)",
        args.users,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    drop(streams);
    Ok(IdleResult {
        scenario: "xmpp-idle",
        server: "ejabberd",
        label: c.label.clone(),
        load1_before,
        users: args.users,
        register_s,
        connect_s,
        rss_before,
        rss_after,
        bytes_per_user,
    })
}

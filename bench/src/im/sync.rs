//! Offline sync: a user misses `messages` messages of one P2P conversation (sent while it
//! has never been online), then connects. Measured from the start of the TCP connect until
//! it holds all of them in order: auth, one IM_SYNC (directory since 0), then IM_PULL FORWARD
//! pages while `has_more`. Repeated `reps` times, each with a fresh pair of users.

use super::conn::{self, Conn, stamp};
use super::{Common, open_all};
use crate::sys::{self, now_ns};
use anyhow::{bail, ensure};
use clap::Args;
use serde::Serialize;
use starling_proto::im::v1::{
    ConvKind, ConvRef, PullReply, PullReq, SendAck, SendReq, SyncReply, SyncReq,
    pull_req::Direction,
};
use starling_proto::op;
use std::rc::Rc;

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages the user misses.
    #[arg(long, short = 'm', default_value_t = 2000)]
    pub messages: u64,
    /// Pull page size (the server clamps it to `im.pull_limit_max`).
    #[arg(long, default_value_t = 200)]
    pub page: u32,
    /// Repetitions, each with new users.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
}

#[derive(Debug, Serialize)]
pub struct SyncRep {
    /// Start of the TCP connect until every message is held in order.
    pub total_ms: f64,
    /// Connect and auth (op 8 with the welcome).
    pub connect_auth_ms: f64,
    pub sync_ms: f64,
    pub pull_ms: f64,
    pub pages: u32,
    pub messages: u64,
    /// Bytes of the pull replies' bodies.
    pub pull_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct SyncResult {
    pub scenario: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub messages: u64,
    pub page: u32,
    /// How long sending the missed messages took (one in flight), per repetition.
    pub fill_s: Vec<f64>,
    pub reps: Vec<SyncRep>,
}

pub async fn run(args: SyncArgs) -> anyhow::Result<SyncResult> {
    let load1_before = sys::load1();
    let base = args.common.uid_base();
    let tokens = Rc::new(args.common.tokens()?);
    let mut reps = Vec::new();
    let mut fill_s = Vec::new();
    for rep in 0..args.reps {
        let sender = base + 2 * i64::from(rep) + 1;
        let user = sender + 1;
        let t = now_ns();
        let mut s = open_all(&args.common, &tokens, &[sender]).await?.remove(0);
        fill(&mut s, user, args.messages).await?;
        fill_s.push((now_ns() - t) as f64 / 1e9);
        drop(s);
        let r = catch_up(&args, &tokens, user, sender).await?;
        eprintln!(
            "sync {}: {} messages in {} pages, {:.1} ms (connect+auth {:.1}, sync {:.1}, pulls {:.1})",
            rep + 1,
            r.messages,
            r.pages,
            r.total_ms,
            r.connect_auth_ms,
            r.sync_ms,
            r.pull_ms
        );
        reps.push(r);
    }
    Ok(SyncResult {
        scenario: "im-sync",
        label: args.common.label.clone(),
        load1_before,
        messages: args.messages,
        page: args.page,
        fill_s,
        reps,
    })
}

/// Sends `n` messages to `to`, each after the previous one's ack.
async fn fill(c: &mut Conn, to: i64, n: u64) -> anyhow::Result<()> {
    let conv = Some(ConvRef {
        kind: ConvKind::P2p as i32,
        id: to,
    });
    for i in 0..n {
        let req = SendReq {
            client_msg_id: format!("{}-{i}", c.uid),
            conv,
            content_type: 1,
            content: stamp(now_ns()),
            ..Default::default()
        };
        let reply = c.request(op::im::SEND, &conn::pb(&req), |_| {}).await?;
        let ack = conn::from_pb::<SendAck>(&reply.body)?;
        ensure!(ack.code == 0 && ack.seq == i + 1, "send {i}: {ack:?}");
    }
    Ok(())
}

async fn catch_up(
    args: &SyncArgs,
    tokens: &Rc<super::Tokens>,
    user: i64,
    peer: i64,
) -> anyhow::Result<SyncRep> {
    let t0 = now_ns();
    let (mut c, welcome) = Conn::open(args.common.addr, None, user, tokens).await?;
    ensure!(welcome.code == 0, "welcome {welcome:?}");
    let t_auth = now_ns();
    let req = SyncReq {
        since: 0,
        limit: 100,
        ..Default::default()
    };
    let reply = c.request(op::im::SYNC, &conn::pb(&req), |_| {}).await?;
    let dir = conn::from_pb::<SyncReply>(&reply.body)?;
    ensure!(dir.code == 0, "sync: {dir:?}");
    let conv = ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    };
    let Some(head) = dir.convs.iter().find(|h| h.conv == Some(conv)) else {
        bail!("the conversation with {peer} is not in the directory: {dir:?}");
    };
    let last = head.last_seq;
    let t_sync = now_ns();
    let mut held = 0u64;
    let mut pages = 0;
    let mut pull_bytes = 0;
    loop {
        let req = PullReq {
            conv: Some(conv),
            dir: Direction::Forward as i32,
            from_seq: held + 1,
            limit: args.page,
        };
        let reply = c.request(op::im::PULL, &conn::pb(&req), |_| {}).await?;
        pull_bytes += reply.body.len() as u64;
        let page = conn::from_pb::<PullReply>(&reply.body)?;
        ensure!(page.code == 0, "pull: code {}", page.code);
        pages += 1;
        for m in &page.messages {
            ensure!(m.seq == held + 1, "seq {} after {held}", m.seq);
            held = m.seq;
        }
        if !page.has_more {
            break;
        }
    }
    let t_done = now_ns();
    ensure!(
        held == last && held == args.messages,
        "held {held} of {last} (sent {})",
        args.messages
    );
    let ms = |a: u64, b: u64| (b - a) as f64 / 1e6;
    Ok(SyncRep {
        total_ms: ms(t0, t_done),
        connect_auth_ms: ms(t0, t_auth),
        sync_ms: ms(t_auth, t_sync),
        pull_ms: ms(t_sync, t_done),
        pages,
        messages: held,
        pull_bytes,
    })
}

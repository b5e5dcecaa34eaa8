//! The end of a soak: every acknowledged send looked up in its conversation's stored log
//! (pulled through comet as a participant), none lost, duplicated, out of order or at another
//! seq than its ack said.

use super::Shared;
use super::ledger::{self, Check, ConvId, Ledger, Logged};
use super::user;
use crate::im::conn::Conn;
use anyhow::{Context, ensure};
use starling_proto::im::v1::{ConvRef, PullReply, PullReq, pull_req::Direction};
use starling_proto::op;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout};

/// Tries of one conversation's check before it is counted in `verify_errors`.
const VERIFY_TRIES: u32 = 8;

/// Pulls every conversation's whole log (as one participant, on a new connection) and
/// checks it against its acknowledged sends, 16 conversations at a time.
pub(super) async fn verify(
    shared: &Rc<Shared>,
    ledger: Ledger,
    gids: &[(i64, i64)],
) -> (Check, BTreeMap<String, u64>) {
    let viewers: HashMap<i64, i64> = gids.iter().copied().collect();
    let gate = Rc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for (i, (conv, acked)) in ledger.into_conversations().into_iter().enumerate() {
        let (viewer, view) = match conv {
            ConvId::P2p(a, b) => (b, user::p2p(a)),
            ConvId::Group(gid) => (viewers[&gid], user::group(gid)),
        };
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8));
        let (gate, shared) = (gate.clone(), shared.clone());
        let page = 200;
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            let mut last = String::new();
            // The check starts while logic still handles the 10,000 clients' disconnects: for
            // about 3 s its device-table calls time out and logins are refused (`auth_failed`,
            // "closed by the server" here; bench/RESULTS.md, run r7): up to 8 tries over ~30 s.
            for attempt in 0..VERIFY_TRIES {
                match pull_log(&shared, source, viewer, view, page).await {
                    Ok(log) => return Ok(ledger::check(&acked, &log, |m| m.sender != 0)),
                    Err(e) => {
                        eprintln!("soak: check of {conv:?}, try {attempt}: {e:#}");
                        last = e.root_cause().to_string();
                    }
                }
                sleep(Duration::from_millis(500) * 2u32.pow(attempt.min(3))).await;
            }
            Err(last)
        }));
    }
    let mut total = Check::default();
    let mut errors = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => total.add(&c),
            Ok(Err(e)) => *errors.entry(e).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    (total, errors)
}

/// `viewer`'s whole log of `conv`, pulled forward from the first seq.
async fn pull_log(
    shared: &Shared,
    source: IpAddr,
    viewer: i64,
    conv: ConvRef,
    page: u32,
) -> anyhow::Result<Vec<Logged>> {
    let open = Conn::open(shared.addr, Some(source), viewer, &shared.tokens);
    let (mut c, w) = timeout(shared.request_timeout, open)
        .await
        .context("login timed out")?
        .with_context(|| format!("viewer {viewer}: login"))?;
    ensure!(w.code == 0, "welcome code {}", w.code);
    // On failure, the address comet's close log names (with the soak's comet log at debug).
    let local = c.local_addr()?;
    pull_all(&mut c, shared, conv, page)
        .await
        .with_context(|| format!("viewer {viewer} from {local}"))
}

async fn pull_all(
    c: &mut Conn,
    shared: &Shared,
    conv: ConvRef,
    page: u32,
) -> anyhow::Result<Vec<Logged>> {
    let mut log = Vec::new();
    let mut from = 1;
    loop {
        let req = PullReq {
            conv: Some(conv),
            dir: Direction::Forward as i32,
            from_seq: from,
            limit: page,
        };
        let body = crate::im::conn::pb(&req);
        let reply = timeout(
            shared.request_timeout,
            c.request(op::im::PULL, &body, |_| {}),
        )
        .await
        .context("pull timed out")??;
        let r: PullReply = crate::im::conn::from_pb(&reply.body)?;
        ensure!(r.code == 0, "pull code {}", r.code);
        log.extend(r.messages.into_iter().map(|m| Logged {
            seq: m.seq,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
        }));
        if !r.has_more || r.next_seq <= from {
            return Ok(log);
        }
        from = r.next_seq;
    }
}

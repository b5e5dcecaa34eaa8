//! One soak user: a connection kept for the whole run (one task), reading every push,
//! heartbeating, sending on its schedule, and closing and reconnecting when churned.
//!
//! Sends follow the client contract (reference im.md §5.4): one in flight, and on a timeout,
//! a lost connection or code 429/503/504 the same `client_msg_id` again (on a new connection
//! if needed) until a final answer. A reconnect is a new TCP connection, auth (refused while
//! Redis is away: retried with backoff), then IM sync: the directory, and a forward pull of
//! each conversation past what the user holds.

use super::ledger::{Acked, ConvId};
use super::{Counters, Shared};
use crate::im::conn::{self, Conn, stamp};
use starling_client::backoff::Backoff;
use starling_proto::im::v1::{
    ConvKind, ConvRef, PullReply, PullReq, Push, SendAck, SendReq, SyncReply, SyncReq,
    pull_req::Direction,
};
use starling_proto::op;
use starling_proto::packet::Packet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// The goim op of the soak's room pushes.
pub const ROOM_OP: i32 = 1000;

/// What a client sends a heartbeat every (logic's `node.heartbeat` default, goim's 4 min).
const HEARTBEAT: Duration = Duration::from_secs(240);

pub enum Cmd {
    /// Close the connection and come back on a new one.
    Churn,
    /// Stop after the send in progress (if any) has its final answer.
    Stop,
}

/// Who a user is and what it sends.
pub struct Plan {
    pub uid: i64,
    pub source: IpAddr,
    /// goim room key, `live://soak-N`.
    pub room: String,
    pub sends: Option<Sends>,
    /// Offset of the first heartbeat, to spread them.
    pub heartbeat_offset: Duration,
}

pub struct Sends {
    /// The conversation as the sender names it.
    pub to: ConvRef,
    pub conv: ConvId,
    pub first: Instant,
    pub period: Duration,
}

pub struct User {
    plan: Plan,
    conn: Conn,
    shared: Rc<Shared>,
    /// Highest seq seen per conversation (kind, id), from pushes and pulls.
    seen: HashMap<(i32, i64), u64>,
    n: u64,
    /// The retry backoff's jitter, seeded by uid (a run is repeatable).
    rng: fastrand::Rng,
}

enum Event {
    Cmd(Option<Cmd>),
    Read(Result<Vec<Packet>, conn::ConnError>),
    SendDue,
    HeartbeatDue,
}

impl User {
    pub fn new(plan: Plan, conn: Conn, shared: Rc<Shared>) -> User {
        User {
            rng: fastrand::Rng::with_seed(plan.uid as u64),
            plan,
            conn,
            shared,
            seen: HashMap::new(),
            n: 0,
        }
    }

    fn counters(&self) -> std::cell::RefMut<'_, Counters> {
        self.shared.counters.borrow_mut()
    }

    /// Runs until `Stop` (or until a reconnect gives up after the run's deadline).
    pub async fn run(mut self, mut rx: UnboundedReceiver<Cmd>) {
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut due = self.plan.sends.as_ref().map_or(far, |s| s.first);
        let mut heartbeat = Instant::now() + self.plan.heartbeat_offset;
        loop {
            let ev = tokio::select! {
                biased;
                c = rx.recv() => Event::Cmd(c),
                r = self.conn.read() => Event::Read(r),
                _ = sleep_until(due) => Event::SendDue,
                _ = sleep_until(heartbeat) => Event::HeartbeatDue,
            };
            let ok = match ev {
                Event::Cmd(Some(Cmd::Churn)) => {
                    self.counters().churned += 1;
                    self.reconnect().await
                }
                Event::Cmd(Some(Cmd::Stop) | None) => break,
                Event::Read(Ok(packets)) => {
                    for p in packets {
                        self.on_packet(&p);
                    }
                    true
                }
                Event::Read(Err(_)) => {
                    self.counters().conn_lost += 1;
                    self.reconnect().await
                }
                Event::SendDue => {
                    let period = self.plan.sends.as_ref().map_or(HEARTBEAT, |s| s.period);
                    due += period;
                    self.send_one().await
                }
                Event::HeartbeatDue => {
                    heartbeat += HEARTBEAT;
                    self.conn.send(op::HEARTBEAT, &[]).await.is_ok() || self.reconnect().await
                }
            };
            if !ok {
                break;
            }
        }
        self.counters().live -= 1;
    }

    fn on_packet(&mut self, p: &Packet) {
        match p.op {
            op::im::MSG => {
                let Ok(push) = conn::from_pb::<Push>(&p.body) else {
                    self.counters().malformed += 1;
                    return;
                };
                self.counters().im_deliveries += push.messages.len() as u64;
                for m in push.messages {
                    if let Some(c) = m.conv {
                        let s = self.seen.entry((c.kind, c.id)).or_default();
                        *s = (*s).max(m.seq);
                    }
                }
            }
            ROOM_OP => self.counters().room_deliveries += 1,
            _ => {}
        }
    }

    /// Sends message `n` until it has a final answer; false when the run's deadline passed
    /// without one (the task ends).
    async fn send_one(&mut self) -> bool {
        let Some(s) = &self.plan.sends else {
            return true;
        };
        let (to, conv) = (s.to, s.conv);
        let n = self.n;
        self.n += 1;
        let id = format!("{}-{n}", self.plan.uid);
        let body = conn::pb(&SendReq {
            client_msg_id: id.clone(),
            conv: Some(to),
            content_type: 1,
            content: stamp(crate::sys::now_ns()),
            ..Default::default()
        });
        self.counters().sent += 1;
        let mut attempt = 0u32;
        let mut stored_503 = false;
        loop {
            attempt += 1;
            let wait = self.shared.request_timeout;
            let mut pushes = Vec::new();
            let r = timeout(
                wait,
                self.conn.request(op::im::SEND, &body, |p| pushes.push(p)),
            )
            .await;
            for p in &pushes {
                self.on_packet(p);
            }
            let timed_out = r.is_err();
            let retry_after = match r {
                Ok(Ok(reply)) => match conn::from_pb::<SendAck>(&reply.body) {
                    Ok(ack) if ack.code == 0 || (ack.code == 503 && ack.stored) => {
                        let a = Acked {
                            sender: self.plan.uid,
                            n,
                            seq: ack.seq,
                        };
                        let changed = self.shared.ledger.borrow_mut().ack(conv, &id, a);
                        let mut c = self.counters();
                        c.seq_changed += u64::from(changed);
                        if ack.code == 0 {
                            c.acked += 1;
                            c.duplicate_acks += u64::from(ack.duplicate);
                            c.stored_503_confirmed += u64::from(stored_503);
                            return true;
                        }
                        c.stored_503 += 1;
                        stored_503 = true;
                        Duration::from_millis(u64::from(ack.retry_after_ms))
                    }
                    Ok(ack) if matches!(ack.code, 429 | 503 | 504) => {
                        *self.counters().retried.entry(ack.code).or_default() += 1;
                        Duration::from_millis(u64::from(ack.retry_after_ms))
                    }
                    Ok(ack) => {
                        *self.counters().refused.entry(ack.code).or_default() += 1;
                        return true;
                    }
                    Err(_) => {
                        self.counters().malformed += 1;
                        return true;
                    }
                },
                Ok(Err(_)) | Err(_) => {
                    if timed_out {
                        self.counters().request_timeouts += 1;
                    } else {
                        self.counters().conn_lost += 1;
                    }
                    if !self.reconnect().await {
                        self.counters().unresolved += 1;
                        return false;
                    }
                    Duration::ZERO
                }
            };
            if Instant::now() > self.shared.give_up.get() {
                self.counters().unresolved += 1;
                return false;
            }
            sleep(retry_after + RETRY.delay(attempt, &mut self.rng)).await;
        }
    }

    /// Closes the connection and opens a new one: auth (retried with backoff), then IM sync.
    /// False when the run's deadline passed first.
    async fn reconnect(&mut self) -> bool {
        // The old socket closes when replaced; close it first so the server sees the churn
        // before the new login (the same device key replaces it either way).
        let _ = self.conn.shutdown().await;
        let t0 = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sh = &self.shared;
            let open = Conn::open_in_room(
                sh.addr,
                Some(self.plan.source),
                self.plan.uid,
                &self.plan.room,
                &sh.tokens,
            );
            match timeout(sh.request_timeout, open).await {
                Ok(Ok((c, w))) if w.code == 0 => {
                    self.conn = c;
                    break;
                }
                _ => self.counters().login_failures += 1,
            }
            if Instant::now() > self.shared.give_up.get() {
                return false;
            }
            sleep(RETRY.delay(attempt, &mut self.rng)).await;
        }
        {
            let mut c = self.counters();
            c.reconnects += 1;
            c.reconnect_ms_max = c.reconnect_ms_max.max(t0.elapsed().as_millis() as u64);
        }
        if let Err(e) = self.sync().await {
            *self.counters().sync_errors.entry(e).or_default() += 1;
        }
        true
    }

    /// IM sync after a (re)connect: the whole directory, then one forward page of each
    /// conversation past the highest seq this user saw.
    async fn sync(&mut self) -> Result<(), String> {
        let mut cursor = String::new();
        let mut behind = Vec::new();
        loop {
            let req = SyncReq {
                since: 0,
                cursor,
                limit: 100,
                ..Default::default()
            };
            let dir: SyncReply = self.call(op::im::SYNC, &conn::pb(&req)).await?;
            if dir.code != 0 {
                return Err(format!("sync code {}", dir.code));
            }
            for h in &dir.convs {
                let Some(c) = h.conv else { continue };
                let seen = self.seen.get(&(c.kind, c.id)).copied().unwrap_or(0);
                if h.last_seq > seen {
                    behind.push((c, seen.max(h.floor_seq.saturating_sub(1))));
                }
            }
            if !dir.has_more {
                break;
            }
            cursor = dir.cursor;
        }
        for (c, held) in behind {
            let req = PullReq {
                conv: Some(c),
                dir: Direction::Forward as i32,
                from_seq: held + 1,
                limit: 100,
            };
            let page: PullReply = self.call(op::im::PULL, &conn::pb(&req)).await?;
            if page.code != 0 {
                return Err(format!("pull code {}", page.code));
            }
            self.counters().synced_messages += page.messages.len() as u64;
            if let Some(last) = page.messages.last() {
                let s = self.seen.entry((c.kind, c.id)).or_default();
                *s = (*s).max(last.seq);
            }
        }
        Ok(())
    }

    /// One request with the run's timeout; pushes meanwhile are taken as usual.
    async fn call<R>(&mut self, op_code: i32, body: &[u8]) -> Result<R, String>
    where
        R: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let mut pushes = Vec::new();
        let r = timeout(
            self.shared.request_timeout,
            self.conn.request(op_code, body, |p| pushes.push(p)),
        )
        .await;
        for p in &pushes {
            self.on_packet(p);
        }
        match r {
            Ok(Ok(reply)) => conn::from_pb(&reply.body).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("op {op_code}: {e}")),
            Err(_) => Err(format!("op {op_code}: timed out")),
        }
    }
}

/// Retry pause, after the answer's `retry_after_ms`: full jitter under a ceiling of 200 ms
/// doubling to 30 s (the JS SDK's `sendRetry`), so senders refused together do not come
/// back in lockstep. With a 5-s ceiling, 10,000 senders each retrying a send held by a 5-s
/// Redis pause sent ≈ 2,800 requests/s, twice what the deployment serves, and it never
/// recovered (bench/RESULTS.md, "Soak", runs r1–r5).
const RETRY: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(30),
    factor: 2.0,
};

/// The P2P conversation from `uid`'s side with `peer`.
pub fn p2p(peer: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    }
}

pub fn group(gid: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::Group as i32,
        id: gid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_thirty_seconds_with_jitter() {
        assert_eq!(RETRY.ceiling(0), Duration::from_millis(200));
        assert_eq!(RETRY.ceiling(1), Duration::from_millis(400));
        assert_eq!(RETRY.ceiling(20), Duration::from_secs(30));
        let mut rng = fastrand::Rng::with_seed(1);
        let d: Vec<Duration> = (0..8).map(|_| RETRY.delay(20, &mut rng)).collect();
        assert!(d.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(d.windows(2).any(|w| w[0] != w[1]), "jittered: {d:?}");
    }
}

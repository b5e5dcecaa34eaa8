//! [`Comet`]: what other threads hold to push to a running comet. Its methods are the
//! in-process form of goim's `goim.comet.Comet` service and take the same messages, so a gRPC
//! server can wrap them one to one.

use crate::bucket::ConnId;
use crate::close::Stats;
use crate::config::ConfigError;
use crate::outbound::{Outbound, QueueDepth};
use crate::worker::{Cmd, Kick, Shared, gather_room_counts};
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq, RoomsReply};
use starling_proto::op;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CometError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("starting a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("worker runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    InvalidArgument(&'static str),
    #[error("comet is stopped")]
    Stopped,
}

/// Addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
}

/// A running comet. Cheap to clone; [`Comet::shutdown`] stops it.
#[derive(Clone)]
pub struct Comet {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    addrs: Addrs,
}

impl Comet {
    pub(crate) fn new(shared: Arc<Shared>, threads: Vec<JoinHandle<()>>, addrs: Addrs) -> Self {
        Comet {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                addrs,
            }),
        }
    }

    pub fn addrs(&self) -> &Addrs {
        &self.inner.addrs
    }

    /// The name logic knows this comet by (goim: the hostname).
    pub fn server_id(&self) -> &str {
        &self.inner.shared.server_id
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.shared.stats
    }

    /// Authenticated connections.
    pub fn conn_count(&self) -> usize {
        self.inner.shared.buckets.len()
    }

    /// Distinct client addresses among authenticated connections.
    pub fn ip_count(&self) -> usize {
        self.inner.shared.buckets.ip_count()
    }

    fn senders(&self) -> &[flume::Sender<Cmd>] {
        self.inner.shared.senders()
    }

    /// goim `PushMsg`: deliver to each key's connection if it accepts `protoOp`. Unknown keys
    /// are skipped (the connection has gone).
    ///
    /// Starling: `protoOp` 45 (IM kick, reference im.md §7.6) to a connection that opted in to
    /// IM is always honoured, whatever it accepts: the packet is written, then the connection
    /// closes (`im_kick`); with an empty message it closes at once, nothing written
    /// (`kicked`: the same device on another comet, im.md §13.11). To a goim connection it is
    /// a push like any other.
    pub async fn push_msg(&self, req: PushMsgReq) -> Result<(), CometError> {
        let proto = req
            .proto
            .ok_or(CometError::InvalidArgument("proto is missing"))?;
        if req.keys.is_empty() {
            return Err(CometError::InvalidArgument("keys are missing"));
        }
        let kick = (req.proto_op == op::im::KICK).then(|| Kick::of(&proto));
        let msg =
            Outbound::from_proto(&proto).deflatable(self.inner.shared.config.websocket.deflate());
        let mut per_worker: HashMap<u16, Vec<ConnId>> = HashMap::new();
        for key in &req.keys {
            if let Some(c) = self.inner.shared.buckets.get(key) {
                per_worker.entry(c.worker).or_default().push(c.id);
            }
        }
        for (worker, ids) in per_worker {
            let cmd = Cmd::Push {
                ids,
                op: req.proto_op,
                msg: msg.clone(),
                kick,
            };
            self.senders()[worker as usize]
                .send_async(cmd)
                .await
                .map_err(|_| CometError::Stopped)?;
        }
        Ok(())
    }

    /// goim `Broadcast`: every connection accepting `protoOp`, at most `speed` connections per
    /// second over the whole comet (0: as fast as possible).
    pub async fn broadcast(&self, req: BroadcastReq) -> Result<(), CometError> {
        let proto = req
            .proto
            .ok_or(CometError::InvalidArgument("proto is missing"))?;
        let msg =
            Outbound::from_proto(&proto).deflatable(self.inner.shared.config.websocket.deflate());
        let workers = self.senders().len() as u32;
        let speed = match req.speed {
            s if s > 0 => (s as u32).div_ceil(workers),
            _ => 0,
        };
        for tx in self.senders() {
            tx.send_async(Cmd::Broadcast {
                op: req.proto_op,
                msg: msg.clone(),
                speed,
            })
            .await
            .map_err(|_| CometError::Stopped)?;
        }
        Ok(())
    }

    /// goim `BroadcastRoom`: every member of the room. Returns once every worker has queued
    /// and flushed it, so a caller that waits before sending the next batch merges messages
    /// only while the comet is busy.
    pub async fn broadcast_room(&self, req: BroadcastRoomReq) -> Result<(), CometError> {
        let proto = req
            .proto
            .ok_or(CometError::InvalidArgument("proto is missing"))?;
        if req.room_id.is_empty() {
            return Err(CometError::InvalidArgument("roomID is missing"));
        }
        let msg =
            Outbound::from_proto(&proto).deflatable(self.inner.shared.config.websocket.deflate());
        let room: Arc<str> = req.room_id.into();
        self.every_worker(|done| Cmd::Room {
            room: room.clone(),
            msg: msg.clone(),
            done,
        })
        .await
    }

    /// Sends one command to every worker and waits until each has signalled its `done`.
    async fn every_worker(&self, cmd: impl Fn(flume::Sender<()>) -> Cmd) -> Result<(), CometError> {
        let (done, acks) = flume::bounded(self.senders().len());
        for tx in self.senders() {
            tx.send_async(cmd(done.clone()))
                .await
                .map_err(|_| CometError::Stopped)?;
        }
        drop(done);
        for _ in 0..self.senders().len() {
            acks.recv_async().await.map_err(|_| CometError::Stopped)?;
        }
        Ok(())
    }

    /// goim `Rooms`: rooms with members on this comet.
    pub async fn rooms(&self) -> RoomsReply {
        let counts = gather_room_counts(self.senders()).await;
        RoomsReply {
            rooms: counts.into_keys().map(|r| (r, true)).collect(),
        }
    }

    /// Open connections (authenticated or not) per worker, by worker id: how evenly the
    /// kernel spreads accepts over the workers' SO_REUSEPORT listeners.
    pub async fn worker_conns(&self) -> Vec<usize> {
        let n = self.senders().len();
        let (tx, rx) = flume::bounded(n);
        for s in self.senders() {
            let _ = s.send_async(Cmd::ConnCount(tx.clone())).await;
        }
        drop(tx);
        let mut counts = vec![0; n];
        while let Ok((worker, conns)) = rx.recv_async().await {
            counts[worker] = conns;
        }
        counts
    }

    /// What waits in the outbound queues of every connection, summed over the workers; a
    /// worker that has not answered within `timeout` is left out (blocking: for a scrape,
    /// never for the push path).
    pub fn queue_depth_blocking(&self, timeout: Duration) -> QueueDepth {
        let n = self.senders().len();
        let deadline = std::time::Instant::now() + timeout;
        let (tx, rx) = flume::bounded(n);
        for s in self.senders() {
            let _ = s.send_deadline(Cmd::Queues(tx.clone()), deadline);
        }
        drop(tx);
        let mut depth = QueueDepth::default();
        while let Ok(d) = rx.recv_deadline(deadline) {
            depth.merge(d);
        }
        depth
    }

    /// Registers comet's counters ([`Stats`]) and the outbound queue gauges with `m`:
    /// `starling_comet_queued_connections`, `_queued_messages`, `_queued_bytes` and
    /// `_queued_max_bytes`, gathered from the workers at each scrape (up to 250 ms).
    pub fn register_metrics(&self, m: &starling_cluster::metrics::Metrics) {
        use starling_cluster::metrics::gauge;
        self.stats().register(m);
        let comet = self.clone();
        m.collect(move |enc| {
            let d = comet.queue_depth_blocking(Duration::from_millis(250));
            gauge(
                enc,
                "starling_comet_queued_connections",
                "Connections with pushes not yet written to their socket.",
                d.connections as i64,
            )?;
            gauge(
                enc,
                "starling_comet_queued_messages",
                "Messages waiting in outbound queues, over every connection.",
                d.messages as i64,
            )?;
            gauge(
                enc,
                "starling_comet_queued_bytes",
                "Bytes waiting in outbound queues, over every connection (a shared push \
                 counts once per connection).",
                d.bytes as i64,
            )?;
            gauge(
                enc,
                "starling_comet_queued_max_bytes",
                "The longest outbound queue, in bytes (bounded by protocol.out_bytes).",
                d.max_bytes as i64,
            )
        });
    }

    /// Room member counts on this comet.
    pub async fn room_counts(&self) -> HashMap<String, i32> {
        gather_room_counts(self.senders()).await
    }

    /// Lame duck: every worker stops accepting and closes its connections spread over
    /// `over`. Returns when the last connection is closed; [`Comet::shutdown`] then stops
    /// the workers. Pushes keep reaching the connections not yet closed.
    pub async fn lame_duck(&self, over: Duration) -> Result<(), CometError> {
        self.every_worker(|done| Cmd::LameDuck { over, done }).await
    }

    /// Stops accepting, closes every connection and joins the workers. Idempotent.
    pub fn shutdown(&self) {
        for tx in self.senders() {
            let _ = tx.send(Cmd::Stop);
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

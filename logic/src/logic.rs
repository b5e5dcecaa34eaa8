//! logic's rules, independent of transport: what gRPC `goim.logic.Logic` and the HTTP API
//! both call.

use crate::admit::{Admission, ConnectHook, Grant};
use crate::config::Config;
use crate::nodes::{self, Registry};
use crate::receive::{Handler, Handlers};
use crate::stats::{AuthRefusal, PushKind, Stats};
use crate::store::{BoxFuture, OnlineStore, OnlineTable, SessionStore, StoreError};
use bytes::Bytes;
use starling_proto::AuthToken;
use starling_proto::grpc::logic::{
    Backoff, ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, NodesReply, OnlineReply,
    OnlineReq, PushMsg, ReceiveReq, push_msg,
};
use starling_proto::grpc::protocol::Proto;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;
use tracing::info;

/// Largest auth token, bytes: goim's auth packet body limit (comet holds it there too; the
/// gRPC `Connect` of another comet may not).
pub const MAX_TOKEN: usize = 4096;
/// Longest connection key a token may carry, bytes (logic's own keys are 36-byte UUIDs).
pub const MAX_KEY: usize = 256;
/// Most ops in a token's `accepts`.
pub const MAX_ACCEPTS: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LogicError {
    #[error("bad token: {0}")]
    BadToken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Push(#[from] PushError),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PushError {
    /// The queue toward job (Kafka, or the in-process queue) refused or timed out.
    #[error("push queue unavailable: {0}")]
    Unavailable(String),
}

/// Where logic hands `PushMsg`s for job: Kafka in the distributed deployment, an in-process
/// queue in the all-in-one. Returns once the message is accepted (and, for Kafka, written).
pub trait PushSink: Send + Sync + 'static {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>>;
}

pub struct Logic {
    pub config: Config,
    /// Pushes by kind and failures by cause, and what the HTTP API and `connect` refused
    /// (see [`crate::stats`]).
    pub stats: Arc<Stats>,
    sessions: Arc<dyn SessionStore>,
    online: OnlineTable,
    /// Shared room counts (Redis) when several logics serve one cluster.
    online_store: Option<Arc<dyn OnlineStore>>,
    sink: Arc<dyn PushSink>,
    registry: Arc<dyn Registry>,
    handlers: Handlers,
    /// The IM layer, when enabled.
    connect_hook: std::sync::OnceLock<Arc<dyn ConnectHook>>,
}

impl Logic {
    pub fn new(
        config: Config,
        sessions: Arc<dyn SessionStore>,
        sink: Arc<dyn PushSink>,
        registry: Arc<dyn Registry>,
    ) -> Self {
        Logic {
            config,
            stats: Arc::default(),
            sessions,
            online: OnlineTable::default(),
            online_store: None,
            sink,
            registry,
            handlers: Handlers::default(),
            connect_hook: std::sync::OnceLock::new(),
        }
    }

    /// Routes client packets of `op` (goim's `Receive`) to `handler`.
    pub fn set_handler(&self, op: i32, handler: Arc<dyn Handler>) {
        self.handlers.set(op, handler);
    }

    /// Lets `hook` admit the connections that ask for IM (set once; later calls are ignored).
    pub fn set_connect_hook(&self, hook: Arc<dyn ConnectHook>) {
        let _ = self.connect_hook.set(hook);
    }

    /// Admits a connection (goim `Connect`): parses the token, generates a key when it has
    /// none, stores the session and tells comet the heartbeat deadline in nanoseconds.
    ///
    /// A token that is not goim's JSON, or over a bound ([`MAX_TOKEN`], [`MAX_KEY`],
    /// [`MAX_ACCEPTS`], `http.max_room_len` for `room_id`), and an IM token the hook refuses,
    /// are refused before any session store call (`LogicError::BadToken`; counted in
    /// `starling_logic_auth_refused_total{reason}`, logged once a second at most).
    pub async fn connect(&self, req: ConnectReq) -> Result<ConnectReply, LogicError> {
        let mut token = self.check_token(&req.token)?;
        if token.key.is_empty() {
            token.key = uuid::Uuid::new_v4().to_string();
        }
        let key = token.key.clone();
        let grant = if token.im.is_empty() {
            Grant::default()
        } else {
            let Some(hook) = self.connect_hook.get() else {
                let e = LogicError::BadToken("IM is not enabled on this server".into());
                return Err(self.refuse(AuthRefusal::Im, e));
            };
            let admitted = hook
                .admit(Admission {
                    token: &token,
                    key: &key,
                    server: &req.server,
                    conn: &req.conn,
                })
                .await;
            match admitted {
                Ok(grant) => grant,
                Err(e @ LogicError::BadToken(_)) => return Err(self.refuse(AuthRefusal::Im, e)),
                Err(e) => return Err(e),
            }
        };
        // goim logs a failed mapping and admits the connection anyway; Starling refuses it, so
        // a connection that pushes could never reach is not left open.
        if let Err(e) = self.sessions.add(token.mid, &key, &req.server).await {
            // Refused after the hook admitted it: undo the hook's registration, since comet
            // will not report the close of a connection it never admitted.
            if grant.im != 0
                && let Some(hook) = self.connect_hook.get()
            {
                hook.left(token.mid, &key, &req.server, &req.conn).await;
            }
            return Err(e.into());
        }
        let node = &self.config.node;
        let heartbeat = node.heartbeat.as_nanos() as i64 * i64::from(node.heartbeat_max);
        // Client-chosen strings are logged quoted and escaped (`?`): a key holding a line break
        // must not forge a log line.
        info!(mid = token.mid, key = ?key, server = %req.server, room = ?token.room_id, "connected");
        let mut accepts = token.accepts;
        accepts.extend(grant.accepts);
        Ok(ConnectReply {
            mid: token.mid,
            key,
            room_id: token.room_id,
            accepts,
            heartbeat,
            im: grant.im,
            max_body: grant.max_body,
            welcome: grant.welcome,
        })
    }

    /// goim's token, parsed and held to its bounds; nothing is stored or read.
    fn check_token(&self, body: &[u8]) -> Result<AuthToken, LogicError> {
        if body.len() > MAX_TOKEN {
            let e = LogicError::BadToken(format!("token over {MAX_TOKEN} bytes"));
            return Err(self.refuse(AuthRefusal::Oversize, e));
        }
        let token = AuthToken::parse(body)
            .map_err(|e| self.refuse(AuthRefusal::BadJson, LogicError::BadToken(e.to_string())))?;
        let max_room = self.config.http.max_room_len;
        let over = if token.key.len() > MAX_KEY {
            Some(format!("key over {MAX_KEY} bytes"))
        } else if token.room_id.len() > max_room {
            Some(format!("room_id over {max_room} bytes"))
        } else if token.accepts.len() > MAX_ACCEPTS {
            Some(format!("accepts over {MAX_ACCEPTS} ops"))
        } else {
            None
        };
        match over {
            Some(why) => Err(self.refuse(AuthRefusal::Oversize, LogicError::BadToken(why))),
            None => Ok(token),
        }
    }

    /// Counts a refused token, logs it (once a second at most) and gives the error back.
    fn refuse(&self, why: AuthRefusal, e: LogicError) -> LogicError {
        if self.stats.auth_refused(why) {
            info!(reason = why.label(), error = %e, "auth token refused (logged once a second)");
        }
        e
    }

    pub async fn disconnect(&self, req: DisconnectReq) -> Result<bool, LogicError> {
        if let Some(hook) = self.connect_hook.get() {
            hook.left(req.mid, &req.key, &req.server, &req.conn).await;
        }
        Ok(self.sessions.remove(req.mid, &req.key, &req.server).await?)
    }

    pub async fn heartbeat(&self, req: HeartbeatReq) -> Result<(), LogicError> {
        if !self.sessions.touch(req.mid, &req.key, &req.server).await? {
            self.sessions.add(req.mid, &req.key, &req.server).await?;
        }
        if req.mid > 0
            && let Some(hook) = self.connect_hook.get()
        {
            hook.beat(&req).await;
        }
        Ok(())
    }

    /// Shares room counts through `store` (goim's `ol_{server}` in Redis).
    pub fn with_online_store(mut self, store: Arc<dyn OnlineStore>) -> Self {
        self.online_store = Some(store);
        self
    }

    /// goim `RenewOnline`: stores one comet's room counts and answers the cluster's (as last
    /// gathered: see [`Logic::refresh_online`]).
    pub async fn renew_online(&self, req: OnlineReq) -> Result<OnlineReply, LogicError> {
        if let Some(store) = &self.online_store {
            store.put(&req.server, &req.room_count).await?;
        }
        let all_room_count =
            self.online
                .renew(&req.server, req.room_count, self.config.online_expire);
        Ok(OnlineReply { all_room_count })
    }

    /// Rereads every registered comet's room counts from the shared store (goim does this
    /// every 10 s). Without a shared store the table is already complete.
    pub async fn refresh_online(&self) -> Result<(), LogicError> {
        let Some(store) = &self.online_store else {
            return Ok(());
        };
        let servers: Vec<String> = self
            .registry
            .instances()
            .into_iter()
            .map(|i| i.hostname)
            .collect();
        let reports = store.get(&servers).await?;
        self.online.replace(reports);
        Ok(())
    }

    /// goim `Receive`: a client packet comet forwarded. Its op's handler answers it (see
    /// [`crate::receive`]); with no handler it is logged, as goim does, and answered with
    /// nothing.
    pub async fn receive(&self, req: ReceiveReq) -> Result<Vec<Proto>, LogicError> {
        let Some(op) = req.proto.as_ref().map(|p| p.op) else {
            return Ok(Vec::new());
        };
        match self.handlers.get(op) {
            Some(h) => h.handle(req).await,
            None => {
                let len = req.proto.map_or(0, |p| p.body.len());
                info!(mid = req.mid, key = ?req.key, op, len, "received client message");
                Ok(Vec::new())
            }
        }
    }

    /// Pushes to each key once, however often the request names it (a key named 300 times
    /// would otherwise queue 300 copies and close its connection as a slow consumer).
    pub async fn push_keys(&self, op: i32, keys: &[String], msg: Bytes) -> Result<(), LogicError> {
        let r = self.push_keys_inner(op, keys, msg).await;
        self.stats.record(PushKind::Keys, &r);
        r
    }

    async fn push_keys_inner(
        &self,
        op: i32,
        keys: &[String],
        msg: Bytes,
    ) -> Result<(), LogicError> {
        let keys = first_of_each(keys);
        let keys = keys.as_slice();
        let servers = self.sessions.servers(keys).await?;
        let mut by_server: HashMap<String, Vec<String>> = HashMap::new();
        for (key, server) in keys.iter().zip(servers) {
            if let Some(s) = server {
                by_server.entry(s).or_default().push(key.clone());
            }
        }
        self.publish_by_server(op, by_server, msg).await
    }

    /// Pushes to every key of each mid once, however often the request names the mid (goim
    /// does the same: it gathers the mids' keys in a map).
    pub async fn push_mids(&self, op: i32, mids: &[i64], msg: Bytes) -> Result<(), LogicError> {
        let r = self.push_mids_inner(op, mids, msg).await;
        self.stats.record(PushKind::Mids, &r);
        r
    }

    async fn push_mids_inner(&self, op: i32, mids: &[i64], msg: Bytes) -> Result<(), LogicError> {
        let mids = first_of_each(mids);
        let mut by_server: HashMap<String, Vec<String>> = HashMap::new();
        for (key, server) in self.sessions.keys_of(&mids).await? {
            by_server.entry(server).or_default().push(key);
        }
        self.publish_by_server(op, by_server, msg).await
    }

    async fn publish_by_server(
        &self,
        op: i32,
        by_server: HashMap<String, Vec<String>>,
        msg: Bytes,
    ) -> Result<(), LogicError> {
        for (server, keys) in by_server {
            self.publish(push_msg::Type::Push, op, msg.clone(), |m| {
                m.server = server;
                m.keys = keys;
            })
            .await?;
        }
        Ok(())
    }

    /// Hands one `PushMsg` to job; `fill` sets the fields its type needs.
    async fn publish(
        &self,
        kind: push_msg::Type,
        op: i32,
        msg: Bytes,
        fill: impl FnOnce(&mut PushMsg),
    ) -> Result<(), LogicError> {
        let mut m = PushMsg {
            r#type: kind as i32,
            operation: op,
            msg,
            ..Default::default()
        };
        fill(&mut m);
        self.sink.publish(m).await?;
        Ok(())
    }

    /// Room push; `room` is goim's room key `type://id`.
    pub async fn push_room(&self, op: i32, room: String, msg: Bytes) -> Result<(), LogicError> {
        let r = self
            .publish(push_msg::Type::Room, op, msg, |m| m.room = room)
            .await;
        self.stats.record(PushKind::Room, &r);
        r
    }

    pub async fn push_all(&self, op: i32, speed: i32, msg: Bytes) -> Result<(), LogicError> {
        let r = self
            .publish(push_msg::Type::Broadcast, op, msg, |m| m.speed = speed)
            .await;
        self.stats.record(PushKind::All, &r);
        r
    }

    /// Cluster room counts (goim's `roomCount`).
    pub fn room_counts(&self) -> HashMap<String, i32> {
        self.online.totals(self.config.online_expire)
    }

    /// Connections and distinct client addresses over every comet.
    pub fn totals(&self) -> (i64, i64) {
        let mut conns = 0;
        let mut ips = 0;
        for i in self.registry.instances() {
            conns += i
                .metadata
                .get("conn_count")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            ips += i
                .metadata
                .get("ip_count")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
        }
        (conns, ips)
    }

    pub fn instances(&self) -> Vec<nodes::Instance> {
        self.registry.instances()
    }

    /// goim `NodesWeighted`: where a client should connect. Region matching needs an IP
    /// database goim never shipped (its `location()` returns ""), so every comet is in-region.
    pub fn nodes(&self, platform: &str) -> NodesReply {
        let node = &self.config.node;
        let instances = self.registry.instances();
        let mut list = Vec::new();
        for i in nodes::weighted(&instances, "", node.region_weight) {
            if platform == "web" {
                list.push(format!("{}{}", i.hostname, node.host_domain));
            } else if let Some(addrs) = i.metadata.get("addrs") {
                list.extend(
                    addrs
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string),
                );
            }
        }
        if list.is_empty() {
            list.push(node.default_domain.clone());
        }
        let b = &self.config.backoff;
        NodesReply {
            domain: node.default_domain.clone(),
            tcp_port: i32::from(node.tcp_port),
            ws_port: i32::from(node.ws_port),
            wss_port: i32::from(node.wss_port),
            heartbeat: node.heartbeat.as_secs() as i32,
            heartbeat_max: node.heartbeat_max as i32,
            nodes: list,
            backoff: Some(Backoff {
                max_delay: b.max_delay,
                base_delay: b.base_delay,
                factor: b.factor as f32,
                jitter: b.jitter as f32,
            }),
        }
    }
}

/// The items in order of first appearance, each once.
fn first_of_each<T: Clone + Eq + std::hash::Hash>(items: &[T]) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().filter(|i| seen.insert(*i)).cloned().collect()
}

#[cfg(test)]
mod dedupe_tests {
    #[test]
    fn first_of_each_keeps_the_order_of_first_appearance() {
        let keys: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        assert_eq!(
            super::first_of_each(&keys),
            ["b", "a", "c"].map(String::from).to_vec()
        );
        assert_eq!(super::first_of_each(&[7i64, 7, 7]), vec![7]);
    }
}

#[cfg(test)]
mod connect_hook_tests {
    use super::*;
    use crate::nodes::Instance;
    use std::sync::Mutex;

    /// Sessions that refuse every add (Redis down).
    struct Refusing;

    impl SessionStore for Refusing {
        fn add(&self, _: i64, _: &str, _: &str) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async { Err(StoreError::Unavailable("down".into())) })
        }
        fn remove(&self, _: i64, _: &str, _: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async { Ok(false) })
        }
        fn touch(&self, _: i64, _: &str, _: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async { Ok(false) })
        }
        fn servers(&self, _: &[String]) -> BoxFuture<'_, Result<Vec<Option<String>>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn keys_of(&self, _: &[i64]) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    struct Nowhere;

    impl PushSink for Nowhere {
        fn publish(&self, _: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
            Box::pin(async { Ok(()) })
        }
    }

    impl Registry for Nowhere {
        fn instances(&self) -> Vec<Instance> {
            Vec::new()
        }
    }

    /// Admits everything and records who is admitted and who left.
    #[derive(Default)]
    struct Recording(Mutex<Vec<String>>);

    impl ConnectHook for Recording {
        fn admit<'a>(&'a self, a: Admission<'a>) -> BoxFuture<'a, Result<Grant, LogicError>> {
            self.0.lock().unwrap().push(format!("admit {}", a.key));
            Box::pin(async {
                Ok(Grant {
                    im: 1,
                    ..Grant::default()
                })
            })
        }
        fn left<'a>(&'a self, _: i64, key: &'a str, _: &'a str, _: &'a str) -> BoxFuture<'a, ()> {
            self.0.lock().unwrap().push(format!("left {key}"));
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn a_connection_refused_after_the_hook_admitted_it_is_undone() {
        let logic = Logic::new(
            Config::default(),
            Arc::new(Refusing),
            Arc::new(Nowhere),
            Arc::new(Nowhere),
        );
        let hook = Arc::new(Recording::default());
        logic.set_connect_hook(hook.clone());
        let req = ConnectReq {
            server: "c1".into(),
            token: br#"{"mid":1,"key":"k","im":"pb"}"#.to_vec().into(),
            ..Default::default()
        };
        assert!(logic.connect(req).await.is_err());
        assert_eq!(*hook.0.lock().unwrap(), ["admit k", "left k"]);
    }

    #[tokio::test]
    async fn asking_for_im_without_a_hook_is_refused() {
        let logic = Logic::new(
            Config::default(),
            Arc::new(crate::store::MemorySessions::default()),
            Arc::new(Nowhere),
            Arc::new(Nowhere),
        );
        let req = ConnectReq {
            token: br#"{"mid":1,"im":"pb"}"#.to_vec().into(),
            ..Default::default()
        };
        assert!(matches!(
            logic.connect(req).await,
            Err(LogicError::BadToken(_))
        ));
        let goim = ConnectReq {
            token: br#"{"mid":1}"#.to_vec().into(),
            ..Default::default()
        };
        assert_eq!(logic.connect(goim).await.unwrap().im, 0);
    }
}

//! The IM service: what logic calls for an IM connection's admission, its ops and its close.
//! [`Im::install`] puts it on a [`Logic`]: the connect hook and one handler per IM op.

use crate::codec;
use crate::config::Config;
use crate::deliver::Delivery;
use crate::devices::{Device, DeviceError, DeviceTable};
use crate::lane::Lanes;
use crate::recent::{Recent, RecentAcks};
use crate::store::{Conv, ImStore};
use crate::token::Tokens;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use starling_logic::admit::{Admission, ConnectHook, Grant};
use starling_logic::store::{BoxFuture, StoreError};
use starling_logic::{Logic, LogicError, PushSink};
use starling_proto::grpc::logic::HeartbeatReq;
use starling_proto::im::v1::{ImWelcome, Kick};
use starling_proto::op::{self, Codec};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Kick codes (reference im.md §5.5): all terminal.
pub mod kick {
    pub const OTHER_DEVICE: i32 = 4001;
    pub const ADMIN: i32 = 4002;
    pub const TOKEN_REVOKED: i32 = 4003;
    pub const USER_DISABLED: i32 = 4004;
    /// Refused for its send rate more than `im.flood_refusals` times within
    /// `im.flood_window`: the connection is closed; it may reconnect (nothing is revoked).
    pub const FLOOD: i32 = 4005;
}

pub use crate::stats::Stats;

pub struct Im {
    pub config: Config,
    pub store: Arc<dyn ImStore>,
    pub devices: Arc<DeviceTable>,
    pub delivery: Arc<Delivery>,
    pub lanes: Arc<Lanes>,
    /// Acks of client sends lately (`im.recent_acks`; `None` when 0).
    pub recent: Option<Arc<RecentAcks>>,
    tokens: Option<Tokens>,
    /// Sends and recalls per connection key (§13.2).
    send_rate: DefaultKeyedRateLimiter<String>,
    /// Typing per (user, conversation): one per 3 s (§7.5).
    typing_rate: DefaultKeyedRateLimiter<(i64, Conv)>,
    /// Rate refusals per connection key: `flood_refusals` per `flood_window` (GCRA, the
    /// burst all of them); a refusal this limiter refuses too closes the connection. `None`
    /// when `flood_refusals` is 0.
    flood: Option<DefaultKeyedRateLimiter<String>>,
    /// Connections (key, conn) already kicked for flooding, so one kick is sent however many
    /// refusals arrive before the close; forgotten when the connection leaves.
    flood_kicked: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Per connection key: when the last 429 said the connection may send again. A request
    /// refused before then ignored the retry-after: it counts toward `flood_refusals`.
    retry_not_before: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub stats: Arc<Stats>,
    /// Connections that left, to forget idle rate-limiter keys now and then.
    departures: AtomicU64,
}

/// `flood_refusals` per `flood_window`, all of them as the burst; `None` when off.
fn flood_quota(config: &Config) -> Option<Quota> {
    let n = NonZeroU32::new(config.flood_refusals)?;
    let period = config.flood_window / n.get();
    Some(Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(n))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Im {
    /// IM with the device table in memory (the all-in-one).
    pub fn new(config: Config, store: Arc<dyn ImStore>, sink: Arc<dyn PushSink>) -> Arc<Im> {
        Im::with_devices(config, store, sink, DeviceTable::default())
    }

    /// IM with `devices` as its device table (a logic node: [`DeviceTable::Redis`]).
    pub fn with_devices(
        config: Config,
        store: Arc<dyn ImStore>,
        sink: Arc<dyn PushSink>,
        devices: DeviceTable,
    ) -> Arc<Im> {
        let devices = Arc::new(devices);
        let delivery = Arc::new(Delivery::new(devices.clone(), sink, store.clone()));
        let rate = NonZeroU32::new(config.send_rate.max(1)).expect("non-zero");
        let burst = NonZeroU32::new(config.send_rate.max(1) * 2).expect("non-zero");
        let typing = Quota::with_period(Duration::from_secs(3)).expect("non-zero period");
        if config.insecure_trust_mid {
            warn!("im.insecure_trust_mid: IM trusts the mid clients claim; development only");
        }
        Arc::new(Im {
            tokens: Tokens::new(&config.token_secret).ok(),
            send_rate: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            typing_rate: RateLimiter::keyed(typing),
            flood: flood_quota(&config).map(RateLimiter::keyed),
            flood_kicked: Default::default(),
            retry_not_before: Default::default(),
            lanes: Lanes::new(delivery.clone()),
            recent: RecentAcks::new(config.recent_acks).map(Arc::new),
            delivery,
            devices,
            store,
            config,
            stats: Arc::default(),
            departures: AtomicU64::new(0),
        })
    }

    /// The token signer, when a secret is configured.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    /// Admits IM connections through `logic` and answers their ops.
    pub fn install(self: &Arc<Self>, logic: &Logic) {
        logic.set_connect_hook(self.clone());
        // Every answered op (20-39), the reserved ones included: one reply per request (a 400
        // for those), so no client waits for an answer that never comes. comet closes a
        // connection that sends an odd one (a reply op) as `bad_op` before it gets here.
        for op in op::ANSWERED {
            logic.set_handler(op, Arc::new(crate::ops::OpHandler(self.clone())));
        }
    }

    /// Appends through `req.conv`'s lane: stored, then delivered (except to the sending
    /// connection `own_key`), then answered (§7.1). A duplicate is delivered again.
    pub async fn append_in_lane(
        &self,
        own_key: Option<String>,
        req: crate::store::AppendReq,
    ) -> crate::lane::Landed<crate::store::Appended> {
        self.append_lane(own_key, req, None).await
    }

    /// A client send (op 20) through its lane, as [`Im::append_in_lane`], with the recent
    /// acks (`crate::recent`): a send whose id was acknowledged while it queued (its own
    /// earlier attempt, answered after comet's deadline) is answered from them when the lane
    /// reaches it, with nothing stored or delivered again; a send stored and handed to
    /// delivery is kept in them before the lane moves on.
    pub(crate) async fn send_in_lane(
        &self,
        own_key: String,
        req: crate::store::AppendReq,
    ) -> crate::lane::Landed<crate::store::Appended> {
        self.append_lane(Some(own_key), req, self.recent.clone())
            .await
    }

    async fn append_lane(
        &self,
        own_key: Option<String>,
        req: crate::store::AppendReq,
        recent: Option<Arc<RecentAcks>>,
    ) -> crate::lane::Landed<crate::store::Appended> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.lanes
            .write(req.conv, own_key, move || {
                Box::pin(async move {
                    let key = (
                        req.conv,
                        req.sender,
                        req.client_msg_id.clone(),
                        req.content_hash,
                    );
                    if let Some(r) = &recent {
                        match r.get(key.0, key.1, &key.2, key.3) {
                            Some(Recent::Acked(a)) => {
                                stats.recent_hits.fetch_add(1, Ordering::Relaxed);
                                return Ok(crate::lane::Written {
                                    deliver: Vec::new(),
                                    reply: a,
                                    delivered: None,
                                });
                            }
                            Some(Recent::Conflict) => return Err(crate::recent::conflict()),
                            None => {}
                        }
                    }
                    let start = std::time::Instant::now();
                    let a = store.append(req).await;
                    stats.store_write(start, &a);
                    let a = a?;
                    let delivered = recent.map(|r| {
                        let a = a.clone();
                        Box::new(move || r.insert(key.0, key.1, &key.2, key.3, &a))
                            as crate::lane::OnDelivered
                    });
                    Ok(crate::lane::Written {
                        deliver: vec![a.message.clone()],
                        reply: a,
                        delivered,
                    })
                })
            })
            .await
    }

    /// Recalls through `req.conv`'s lane, like [`Im::append`]: the RECALL event is delivered.
    pub async fn recall_in_lane(
        &self,
        own_key: Option<String>,
        req: crate::store::RecallReq,
    ) -> crate::lane::Landed<crate::store::Appended> {
        let (store, stats) = (self.store.clone(), self.stats.clone());
        self.lanes
            .write(req.conv, own_key, move || {
                Box::pin(async move {
                    let start = std::time::Instant::now();
                    let a = store.recall(req).await;
                    stats.store_write(start, &a);
                    let a = a?;
                    Ok(crate::lane::Written {
                        deliver: vec![a.message.clone()],
                        reply: a,
                        delivered: None,
                    })
                })
            })
            .await
    }

    /// `Some(ms)` to wait when the connection `key` has spent its send tokens.
    pub fn spend_send_token(&self, key: &str) -> Option<u32> {
        match self.send_rate.check_key(&key.to_string()) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Some(wait.as_millis().max(1) as u32)
            }
        }
    }

    /// A send or recall of `dev` refused for its rate (429, told to wait `wait_ms`): counted.
    /// When it came before the retry time its previous 429 gave (the client did not wait),
    /// it is a violation; one violation too many within `flood_window` kicks the connection
    /// with [`kick::FLOOD`] (once; comet writes the notice and closes it as `im_kick`).
    pub(crate) async fn rate_refused(&self, dev: &Device, wait_ms: u32) {
        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let Some(flood) = &self.flood else {
            return;
        };
        let now = std::time::Instant::now();
        let ignored_retry_after = {
            let mut next = self.retry_not_before.lock().expect("retry map lock");
            let ignored = next.get(&dev.key).is_some_and(|t| now < *t);
            next.insert(
                dev.key.clone(),
                now + std::time::Duration::from_millis(wait_ms.into()),
            );
            ignored
        };
        if !ignored_retry_after || flood.check_key(&dev.key).is_ok() {
            return;
        }
        let first = self
            .flood_kicked
            .lock()
            .expect("flood set lock")
            .insert((dev.key.clone(), dev.conn.clone()));
        if !first {
            return;
        }
        self.stats.flood_closed.fetch_add(1, Ordering::Relaxed);
        warn!(mid = dev.mid, key = ?dev.key, refusals = self.config.flood_refusals, window = ?self.config.flood_window, "IM connection flooding: closed");
        self.send_kick(dev, kick::FLOOD, "flood", "").await;
    }

    /// `Some(ms)` when `uid` already typed in `conv` within 3 s.
    pub fn spend_typing_token(&self, uid: i64, conv: Conv) -> Option<u32> {
        match self.typing_rate.check_key(&(uid, conv)) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Some(wait.as_millis().max(1) as u32)
            }
        }
    }

    /// Kicks every connection of `uid` matching `platform` and `key` (empty = any) with
    /// `code`, each on the comet the device table names; returns how many. Errors: the device
    /// table is unavailable (nobody was kicked).
    pub async fn kick_user(
        &self,
        uid: i64,
        platform: &str,
        key: &str,
        code: i32,
        reason: &str,
    ) -> Result<usize, DeviceError> {
        let victims = self.devices.take(uid, platform, key).await?;
        for d in &victims {
            self.send_kick(d, code, reason, "").await;
        }
        Ok(victims.len())
    }

    async fn send_kick(&self, d: &Device, code: i32, reason: &str, by_platform: &str) {
        let k = Kick {
            code,
            reason: reason.into(),
            by_platform: by_platform.into(),
        };
        self.stats.kicked.fetch_add(1, Ordering::Relaxed);
        info!(mid = d.mid, key = ?d.key, server = %d.server, code, "kicking an IM connection");
        if let Err(e) = self.delivery.kick(d, Some(&k)).await {
            warn!(mid = d.mid, key = ?d.key, error = %e, "kick not handed over");
        }
    }

    async fn admit_inner(&self, a: Admission<'_>) -> Result<Grant, LogicError> {
        let t = a.token;
        let refuse = |why: String| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            info!(mid = t.mid, key = ?a.key, why = %why, "IM connection refused");
            Err(LogicError::BadToken(why))
        };
        let Some(codec) = codec::from_token(&t.im) else {
            return refuse(format!("im must be \"pb\" or \"json\", not {:?}", t.im));
        };
        if t.mid <= 0 {
            return refuse("IM needs a user id (mid > 0)".into());
        }
        if t.platform.len() > crate::devices::MAX_PLATFORM {
            return refuse(format!(
                "platform over {} bytes",
                crate::devices::MAX_PLATFORM
            ));
        }
        // The signature first: a flood of forged tokens never reaches the store.
        let claims = match &self.tokens {
            Some(tokens) => match tokens.verify(&t.im_token, t.mid, &t.platform, 0) {
                Ok(claims) => Some(claims),
                Err(e) => return refuse(e.to_string()),
            },
            None if self.config.insecure_trust_mid => None,
            None => return refuse("IM has no token secret".into()),
        };
        let user = match self.store.user(t.mid).await {
            Ok(u) => u.unwrap_or_default(),
            Err(e) => return Err(LogicError::BadToken(format!("store: {e}"))),
        };
        if user.disabled {
            return refuse("user disabled".into());
        }
        if let Some(claims) = &claims
            && let Err(e) = crate::token::check_not_revoked(claims, user.valid_after_ms)
        {
            return refuse(e.to_string());
        }
        let dev = Device {
            mid: t.mid,
            key: a.key.to_string(),
            platform: t.platform.clone(),
            codec,
            server: a.server.to_string(),
            conn: a.conn.to_string(),
            since_ms: now_ms(),
        };
        // Redis down: the login is refused, as goim refuses one whose session it cannot store.
        let displaced = self
            .devices
            .register(dev, self.config.multi_login)
            .await
            .map_err(|e| LogicError::Store(StoreError::Unavailable(e.to_string())))?;
        if let Some(old) = displaced.same_key {
            // The same device reconnected through another comet: close the old connection
            // without a notice (goim's same-key rule, §13.11).
            if let Err(e) = self.delivery.kick(&old, None).await {
                warn!(mid = old.mid, key = ?old.key, error = %e, "silent close not handed over");
            }
        }
        for d in &displaced.kicked {
            self.send_kick(
                d,
                kick::OTHER_DEVICE,
                "logged in on another device",
                &t.platform,
            )
            .await;
        }
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        let welcome = ImWelcome {
            code: 0,
            epoch: self.store.epoch(),
            server_ts: now_ms(),
            gap_wait_ms: self.config.gap_wait.as_millis() as u32,
            resync_ms: self.config.resync_hint.as_millis() as u32,
            max_body: self.config.max_body,
        };
        Ok(Grant {
            im: codec as i32,
            accepts: op::im::PUSHES.to_vec(),
            max_body: self.config.max_body as i32,
            welcome: codec::encode(codec, &welcome),
        })
    }
}

impl ConnectHook for Im {
    fn admit<'a>(&'a self, a: Admission<'a>) -> BoxFuture<'a, Result<Grant, LogicError>> {
        Box::pin(self.admit_inner(a))
    }

    fn left<'a>(
        &'a self,
        mid: i64,
        key: &'a str,
        server: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.flood.is_some() {
                self.flood_kicked
                    .lock()
                    .expect("flood set lock")
                    .remove(&(key.to_string(), conn.to_string()));
                self.retry_not_before
                    .lock()
                    .expect("retry map lock")
                    .remove(key);
            }
            if let Err(e) = self.devices.remove(mid, key, server, conn).await {
                // The entry stays until the hash expires; deliveries to it are dropped by
                // comet (the key is gone there).
                warn!(mid, key = ?key, error = %e, "IM device not removed");
            }
            // The rate limiters keep a state per key; forget the idle ones now and then.
            if self.departures.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
                self.send_rate.retain_recent();
                self.typing_rate.retain_recent();
                if let Some(flood) = &self.flood {
                    flood.retain_recent();
                }
            }
        })
    }

    fn beat<'a>(&'a self, req: &'a HeartbeatReq) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // goim connections have no device entry: nothing to do for them.
            let Some(codec) = Codec::from_im(req.im) else {
                return;
            };
            // comet's ids never hold the value separator; a heartbeat whose do would write an
            // entry no disconnect matches.
            if req.key.is_empty() || req.conn.contains('|') || req.server.contains('|') {
                warn!(mid = req.mid, key = ?req.key, conn = ?req.conn, server = ?req.server, "heartbeat with an unusable key, conn or server ignored");
                return;
            }
            // Redis may have lost the entry (restart, failover): put it back, or the
            // connection would stay up but unreachable. The platform is not in the heartbeat;
            // a restored entry has none until the device logs in again.
            let dev = Device {
                mid: req.mid,
                key: req.key.clone(),
                platform: String::new(),
                codec,
                server: req.server.clone(),
                conn: req.conn.clone(),
                since_ms: now_ms(),
            };
            match self.devices.restore(&dev).await {
                Ok(true) => {
                    self.stats.device_restores.fetch_add(1, Ordering::Relaxed);
                    info!(mid = req.mid, key = %req.key, server = %req.server, "IM device entry put back by a heartbeat");
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(mid = req.mid, key = ?req.key, error = %e, "IM device expiry not refreshed")
                }
            }
        })
    }
}

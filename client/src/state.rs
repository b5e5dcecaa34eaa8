//! The IM receive state machine of the client contract (reference im.md §5.4 steps 2–4), sans
//! IO: the caller passes in what arrived and `now`, and gets back the messages that became
//! visible (in seq order, each `(conversation, seq)` once) and the requests to send.
//!
//! - Per conversation, `contig` is the highest seq such that every seq from the floor up to it
//!   is held. A push at or below `contig` is a duplicate and dropped; `contig + 1` is applied;
//!   anything higher is held until the gap closes or `gap_wait` passes, then pulled forward
//!   from `contig + 1` ([`ImState::due_gaps`]).
//! - A sync pass ([`ImState::begin_sync`] … [`ImState::end_sync`]) holds pushes (gim #46),
//!   pages through `IM_SYNC`, pulls forward every conversation whose `last_seq` is above
//!   `contig`, and only then applies the held pushes. `reset` wipes the cache.

use starling_proto::im::v1::{
    ConvRef, ImWelcome, Message, PullReply, PullReq, Push, SyncReply, SyncReq, pull_req::Direction,
};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A conversation as a map key: `(ConvKind as i32, id)`.
pub type ConvKey = (i32, i64);

pub fn key(c: &ConvRef) -> ConvKey {
    (c.kind, c.id)
}

pub fn conv_ref((kind, id): ConvKey) -> ConvRef {
    ConvRef { kind, id }
}

/// Page size of pulls (reference im.md §5.4 step 3: pages of 100).
pub const PULL_PAGE: u32 = 100;
/// Page size of directory syncs (≤ 200 per the schema).
pub const SYNC_PAGE: u32 = 100;
/// `gap_wait` until the server says otherwise (`im.gap_wait`, 1 s).
pub const DEFAULT_GAP_WAIT: Duration = Duration::from_secs(1);
/// `resync_ms` until the server says otherwise (`im.resync_hint`, 5 min).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// What one conversation looks like to this client.
#[derive(Debug, Default, Clone)]
pub struct ConvState {
    /// Every seq in `floor..=contig` is held (applied).
    pub contig: u64,
    /// The first seq this user may read (join, deletion, retention); 0 until known.
    pub floor: u64,
    /// The highest seq known to exist (from sync heads and arrivals).
    pub last_seq: u64,
    /// Arrivals above `contig + 1`, waiting for the gap to close.
    held: BTreeMap<u64, Message>,
    /// When the current gap opened (or was last pulled).
    gap_since: Option<Instant>,
}

impl ConvState {
    /// Messages held above a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn release(&mut self, out: &mut Vec<Message>) {
        while let Some(next) = self.held.remove(&(self.contig + 1)) {
            self.contig += 1;
            out.push(next);
        }
        // Anything left at or below contig can no longer be applied.
        let contig = self.contig;
        self.held.retain(|s, _| *s > contig);
    }
}

/// What a sync reply asks for next.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// The store's epoch differs: the cache was wiped; the app must drop what it shows and
    /// this request (from `since = 0`) starts the pass again.
    Reset(SyncReq),
    /// Pull these forward (each to its end, [`ImState::on_pull_reply`]), then send `next` or,
    /// when `None`, call [`ImState::end_sync`]. `released`: messages that became visible
    /// because a floor rose.
    Page {
        pulls: Vec<PullReq>,
        released: Vec<Message>,
        next: Option<SyncReq>,
    },
}

/// What a pull reply gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pulled {
    /// Newly visible messages, in seq order.
    pub messages: Vec<Message>,
    /// The next page's request while the server has more.
    pub more: Option<PullReq>,
}

/// The receive side of one IM client (all conversations of one user).
#[derive(Debug)]
pub struct ImState {
    pub convs: HashMap<ConvKey, ConvState>,
    /// The `since` of the next sync pass: `server_ts` of the last complete one.
    pub since: i64,
    /// The store epoch the cache belongs to (0 = none yet).
    pub epoch: u64,
    /// How long a gap may stay open before it is pulled (`ImWelcome/SyncReply.gap_wait_ms`).
    pub gap_wait: Duration,
    /// Idle resync period (`resync_ms`).
    pub resync: Duration,
    /// Messages that arrived in pushes, duplicates included.
    pub raw: u64,
    /// Arrivals dropped as already held (pushes and pulls).
    pub raw_duplicates: u64,
    /// Pulls made because a gap outlived `gap_wait`.
    pub gap_pulls: u64,
    syncing: bool,
    cursor: String,
    held_pushes: Vec<Message>,
}

impl Default for ImState {
    fn default() -> Self {
        ImState {
            convs: HashMap::new(),
            since: 0,
            epoch: 0,
            gap_wait: DEFAULT_GAP_WAIT,
            resync: DEFAULT_RESYNC,
            raw: 0,
            raw_duplicates: 0,
            gap_pulls: 0,
            syncing: false,
            cursor: String::new(),
            held_pushes: Vec::new(),
        }
    }
}

impl ImState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the timings of the auth reply (op 8 body of an IM connection).
    pub fn welcome(&mut self, w: &ImWelcome) {
        self.timings(w.gap_wait_ms, w.resync_ms);
    }

    fn timings(&mut self, gap_wait_ms: u32, resync_ms: u32) {
        if gap_wait_ms > 0 {
            self.gap_wait = Duration::from_millis(u64::from(gap_wait_ms));
        }
        if resync_ms > 0 {
            self.resync = Duration::from_millis(u64::from(resync_ms));
        }
    }

    /// Whether a sync pass is open (pushes are held).
    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// Wipes the cache (a `reset`, or the app logging out).
    pub fn clear(&mut self) {
        self.convs.clear();
        self.since = 0;
        self.held_pushes.clear();
    }

    /// An op-41 push. Returns the messages that became visible; while syncing, none (held).
    pub fn on_push(&mut self, push: Push, now: Instant) -> Vec<Message> {
        self.raw += push.messages.len() as u64;
        if self.syncing {
            self.held_pushes.extend(push.messages);
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in push.messages {
            out.extend(self.accept(m, now));
        }
        out
    }

    /// Applies one message at its seq (§5.4 step 2): the messages that became visible.
    pub fn accept(&mut self, m: Message, now: Instant) -> Vec<Message> {
        let Some(conv) = m.conv else {
            return Vec::new();
        };
        let st = self.convs.entry(key(&conv)).or_default();
        if m.seq <= st.contig || st.held.contains_key(&m.seq) {
            self.raw_duplicates += 1;
            return Vec::new();
        }
        st.last_seq = st.last_seq.max(m.seq);
        st.held.insert(m.seq, m);
        let mut out = Vec::new();
        st.release(&mut out);
        st.gap_since = if st.held.is_empty() {
            None
        } else {
            st.gap_since.or(Some(now))
        };
        out
    }

    /// Raises a conversation's floor: nothing below it exists for this user.
    pub fn raise_floor(&mut self, k: ConvKey, floor: u64) -> Vec<Message> {
        let st = self.convs.entry(k).or_default();
        let mut out = Vec::new();
        if floor > st.floor {
            st.floor = floor;
        }
        if floor > 0 && st.contig < floor - 1 {
            st.contig = floor - 1;
            st.release(&mut out);
            if st.held.is_empty() {
                st.gap_since = None;
            }
        }
        out
    }

    /// Opens a sync pass: pushes are held until [`ImState::end_sync`]. Returns the first page's
    /// request.
    pub fn begin_sync(&mut self) -> SyncReq {
        self.syncing = true;
        self.cursor.clear();
        self.sync_req()
    }

    fn sync_req(&self) -> SyncReq {
        SyncReq {
            since: self.since,
            cursor: self.cursor.clone(),
            limit: SYNC_PAGE,
            epoch: self.epoch,
        }
    }

    /// One `SyncReply` page (code 0; the caller handles other codes).
    pub fn on_sync_reply(&mut self, r: &SyncReply) -> SyncStep {
        self.timings(r.gap_wait_ms, r.resync_ms);
        if r.reset {
            self.convs.clear();
            self.since = 0;
            self.epoch = r.epoch;
            self.cursor.clear();
            return SyncStep::Reset(self.sync_req());
        }
        self.epoch = r.epoch;
        let mut pulls = Vec::new();
        let mut released = Vec::new();
        for h in &r.convs {
            let Some(conv) = h.conv else { continue };
            released.extend(self.raise_floor(key(&conv), h.floor_seq));
            let st = self.convs.entry(key(&conv)).or_default();
            st.last_seq = st.last_seq.max(h.last_seq);
            if h.last_seq > st.contig {
                pulls.push(self.pull_req(conv));
            }
        }
        let next = if r.has_more {
            self.cursor = r.cursor.clone();
            Some(self.sync_req())
        } else {
            self.since = r.server_ts;
            None
        };
        SyncStep::Page {
            pulls,
            released,
            next,
        }
    }

    /// `IM_PULL FORWARD` from `contig + 1`, one page.
    pub fn pull_req(&self, conv: ConvRef) -> PullReq {
        PullReq {
            conv: Some(conv),
            dir: Direction::Forward as i32,
            from_seq: self.convs.get(&key(&conv)).map_or(0, |s| s.contig) + 1,
            limit: PULL_PAGE,
        }
    }

    /// A forward `PullReply` (code 0) for `conv`.
    pub fn on_pull_reply(&mut self, conv: ConvRef, r: &PullReply, now: Instant) -> Pulled {
        let k = key(&conv);
        let before = self.convs.get(&k).map_or(0, |s| s.contig);
        let mut messages = self.raise_floor(k, r.floor_seq);
        for m in &r.messages {
            messages.extend(self.accept(m.clone(), now));
        }
        let st = self.convs.entry(k).or_default();
        st.last_seq = st.last_seq.max(r.last_seq);
        // has_more with no progress would loop forever: stop, the gap timer retries.
        let more = (r.has_more && st.contig > before).then(|| self.pull_req(conv));
        Pulled { messages, more }
    }

    /// Closes the sync pass: the held pushes are applied (visible ones returned).
    pub fn end_sync(&mut self, now: Instant) -> Vec<Message> {
        self.syncing = false;
        let mut out = Vec::new();
        for m in std::mem::take(&mut self.held_pushes) {
            out.extend(self.accept(m, now));
        }
        out
    }

    /// The connection was lost mid-pass: pushes stay held for the next pass.
    pub fn abort_sync(&mut self) {
        self.syncing = false;
        self.cursor.clear();
    }

    /// The pulls for gaps open longer than `gap_wait` (§5.4 step 2). Each re-arms its timer,
    /// so a gap is pulled again only after another `gap_wait`.
    pub fn due_gaps(&mut self, now: Instant) -> Vec<PullReq> {
        if self.syncing {
            return Vec::new();
        }
        let wait = self.gap_wait;
        let late: Vec<ConvKey> = self
            .convs
            .iter_mut()
            .filter(|(_, s)| s.gap_since.is_some_and(|t| now >= t + wait))
            .map(|(k, s)| {
                s.gap_since = Some(now);
                *k
            })
            .collect();
        self.gap_pulls += late.len() as u64;
        late.into_iter()
            .map(|k| self.pull_req(conv_ref(k)))
            .collect()
    }

    /// When the oldest open gap falls due.
    pub fn next_gap_at(&self) -> Option<Instant> {
        self.convs
            .values()
            .filter_map(|s| s.gap_since)
            .min()
            .map(|t| t + self.gap_wait)
    }
}

#[cfg(test)]
mod tests;

//! The writer thread: the only code that writes the database (reference im.md §6.2).
//!
//! State, all owned by the thread:
//! - [`Committed`]: caches of what is on disk (conversation heads and ids it has touched, the
//!   msg_id / conv_id / gid counters, owners' contact versions), loaded lazily.
//! - per batch, a [`Layer`] of pending writes; per command, another layer on top of it, merged
//!   into the batch's only when the command succeeds (a refused command writes nothing).
//!
//! A batch is written as one fjall batch, synced when durability is `Sync`, and only then are
//! its commands answered. When the commit fails every command of the batch is answered
//! `Unavailable` and the caches are dropped, to be reloaded from disk: no seq or id handed out
//! by the failed batch is skipped or reused.

use super::records::{ConvRec, DedupRec, GroupRec, MemberRec, decode};
use super::{Clock, EmbeddedConfig, Ks, Shared, keys, unavailable};
use crate::store::{
    AppendReq, Appended, ContactState, Conv, ConvMeta, CreateGroupReq, Durability, GroupChange,
    MarkKind, Marked, MemberState, MembersChangeReq, RecallReq, SetMemberReq, StoreError,
    StoreResult, StoredMessage, UpdateGroupReq, User,
};
use fjall::PersistMode;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A write command and where to answer it.
pub(super) enum Cmd {
    Append(AppendReq, Reply<Appended>),
    Recall(RecallReq, Reply<Appended>),
    CreateGroup(CreateGroupReq, Reply<GroupChange>),
    AddMembers(MembersChangeReq, Reply<GroupChange>),
    RemoveMembers(MembersChangeReq, Reply<GroupChange>),
    UpdateGroup(UpdateGroupReq, Reply<GroupChange>),
    Dissolve(i64, String, Reply<GroupChange>),
    SetMember(SetMemberReq, Reply<()>),
    Mark {
        uid: i64,
        conv: Conv,
        kind: MarkKind,
        seq: u64,
        reply: Reply<Marked>,
    },
    PutUser(User, Reply<()>),
    PutContact {
        owner: i64,
        peer: i64,
        state: Option<ContactState>,
        reply: Reply<u64>,
    },
}

/// An answer held until the batch's commit: given the commit's outcome, it sends either the
/// command's own result or the commit's error.
type Answer = Box<dyn FnOnce(&StoreResult<()>) + Send>;

fn hold<T: Send + 'static>(reply: Reply<T>, result: StoreResult<T>) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(match commit {
            Ok(()) => result,
            Err(e) => Err(e.clone()),
        });
    })
}

/// The id counters: the next value to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    pub msg_id: u64,
    pub conv_id: u64,
    pub gid: i64,
}

/// What is on disk, cached.
struct Committed {
    convs: HashMap<u64, ConvMeta>,
    conv_ids: HashMap<Conv, u64>,
    contact_ver: HashMap<i64, u64>,
    counters: Counters,
}

impl Committed {
    fn load(shared: &Shared) -> StoreResult<Committed> {
        let meta = shared.ks(Ks::Meta);
        let get = |k: &[u8]| -> StoreResult<u64> {
            Ok(meta
                .get(k)
                .map_err(unavailable)?
                .map_or(1, |v| keys::de_u(&v)))
        };
        Ok(Committed {
            convs: HashMap::new(),
            conv_ids: HashMap::new(),
            contact_ver: HashMap::new(),
            counters: Counters {
                msg_id: get(keys::META_NEXT_MSG_ID)?,
                conv_id: get(keys::META_NEXT_CONV_ID)?,
                gid: get(keys::META_NEXT_GID)? as i64,
            },
        })
    }
}

/// Pending writes: raw key-values plus the typed heads and counters (written once per batch).
#[derive(Default)]
pub(super) struct Layer {
    pub kv: BTreeMap<(Ks, Vec<u8>), Option<Vec<u8>>>,
    pub convs: HashMap<u64, ConvMeta>,
    pub conv_ids: HashMap<Conv, u64>,
    pub contact_ver: HashMap<i64, u64>,
    pub counters: Option<Counters>,
}

impl Layer {
    fn merge(&mut self, top: Layer) {
        self.kv.extend(top.kv);
        self.convs.extend(top.convs);
        self.conv_ids.extend(top.conv_ids);
        self.contact_ver.extend(top.contact_ver);
        if top.counters.is_some() {
            self.counters = top.counters;
        }
    }
}

/// One command's view: its own layer over the batch's, over the caches, over the database.
pub(super) struct Tx<'a> {
    shared: &'a Shared,
    committed: &'a mut Committed,
    batch: &'a Layer,
    pub cmd: Layer,
    /// The batch's clock, ms.
    pub now: i64,
}

impl Tx<'_> {
    pub fn get(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let k = (ks, key.to_vec());
        if let Some(v) = self.cmd.kv.get(&k).or_else(|| self.batch.kv.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self
            .shared
            .ks(ks)
            .get(key)
            .map_err(unavailable)?
            .map(|v| v.to_vec()))
    }

    pub fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) {
        self.cmd.kv.insert((ks, key), Some(value));
    }

    pub fn del(&mut self, ks: Ks, key: Vec<u8>) {
        self.cmd.kv.insert((ks, key), None);
    }

    /// Every pair under `prefix`, the database's with the pending writes applied.
    pub fn scan_prefix(&self, ks: Ks, prefix: &[u8]) -> StoreResult<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for g in self.shared.ks(ks).prefix(prefix) {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            out.insert(k.to_vec(), v.to_vec());
        }
        for layer in [self.batch, &self.cmd] {
            for ((_, k), v) in layer
                .kv
                .range((ks, prefix.to_vec())..)
                .take_while(|((s, k), _)| *s == ks && k.starts_with(prefix))
            {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    pub fn counters(&self) -> Counters {
        self.cmd
            .counters
            .or(self.batch.counters)
            .unwrap_or(self.committed.counters)
    }

    pub fn set_counters(&mut self, c: Counters) {
        self.cmd.counters = Some(c);
    }

    pub fn conv_id(&mut self, conv: Conv) -> StoreResult<Option<u64>> {
        if let Some(id) = self
            .cmd
            .conv_ids
            .get(&conv)
            .or_else(|| self.batch.conv_ids.get(&conv))
        {
            return Ok(Some(*id));
        }
        if let Some(id) = self.committed.conv_ids.get(&conv) {
            return Ok(Some(*id));
        }
        let id = self
            .shared
            .ks(Ks::ConvKey)
            .get(keys::conv_key(conv))
            .map_err(unavailable)?
            .map(|v| keys::de_u(&v));
        if let Some(id) = id {
            self.committed.conv_ids.insert(conv, id);
        }
        Ok(id)
    }

    /// The head of an existing conversation.
    pub fn head(&mut self, conv_id: u64) -> StoreResult<ConvMeta> {
        if let Some(m) = self
            .cmd
            .convs
            .get(&conv_id)
            .or_else(|| self.batch.convs.get(&conv_id))
        {
            return Ok(m.clone());
        }
        if let Some(m) = self.committed.convs.get(&conv_id) {
            return Ok(m.clone());
        }
        let v = self
            .shared
            .ks(Ks::Conv)
            .get(keys::conv(conv_id))
            .map_err(unavailable)?
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "damaged store: conversation {conv_id} has an id but no head"
                ))
            })?;
        let m = decode::<ConvRec>("conv", &v)?.into_meta(conv_id);
        self.committed.convs.insert(conv_id, m.clone());
        Ok(m)
    }

    pub fn set_head(&mut self, m: ConvMeta) {
        self.cmd.convs.insert(m.conv_id, m);
    }

    /// Creates a conversation with no messages and no members.
    pub fn create_conv(&mut self, conv: Conv) -> ConvMeta {
        let mut c = self.counters();
        let conv_id = c.conv_id;
        c.conv_id += 1;
        self.set_counters(c);
        let m = ConvMeta {
            conv_id,
            conv,
            last_seq: 0,
            last_msg_ts: 0,
            min_seq: 1,
            member_version: 0,
            created_ts: self.now,
        };
        self.cmd.conv_ids.insert(conv, conv_id);
        self.set_head(m.clone());
        m
    }

    pub fn member(&self, conv_id: u64, uid: i64) -> StoreResult<Option<MemberState>> {
        self.get(Ks::Member, &keys::member(conv_id, uid))?
            .map(|v| decode::<MemberRec>("member", &v).map(MemberRec::into_state))
            .transpose()
    }

    /// Writes a membership under both of its keys.
    pub fn put_member(&mut self, conv_id: u64, m: &MemberState) {
        let v = MemberRec::from_state(m).encode_to_vec();
        self.put(Ks::Member, keys::member(conv_id, m.uid), v.clone());
        self.put(Ks::UserConv, keys::user_conv(m.uid, conv_id), v);
    }

    pub fn group(&self, gid: i64) -> StoreResult<Option<GroupRec>> {
        self.get(Ks::Group, &keys::id(gid))?
            .map(|v| decode::<GroupRec>("group", &v))
            .transpose()
    }

    pub fn put_group(&mut self, gid: i64, g: &GroupRec) {
        self.put(Ks::Group, keys::id(gid), g.encode_to_vec());
    }

    pub fn message(&self, conv_id: u64, seq: u64) -> StoreResult<Option<StoredMessage>> {
        self.get(Ks::Msg, &keys::msg(conv_id, seq))?
            .map(|v| decode::<StoredMessage>("msg", &v))
            .transpose()
    }

    pub fn put_message(&mut self, conv_id: u64, m: &StoredMessage) {
        self.put(Ks::Msg, keys::msg(conv_id, m.seq), m.encode_to_vec());
    }

    pub fn dedup(
        &self,
        conv_id: u64,
        sender: i64,
        client_msg_id: &str,
    ) -> StoreResult<Option<DedupRec>> {
        self.get(Ks::Dedup, &keys::dedup(conv_id, sender, client_msg_id))?
            .map(|v| decode::<DedupRec>("dedup", &v))
            .transpose()
    }

    /// The owner's contact version (0 = never changed).
    pub fn contact_version(&mut self, owner: i64) -> StoreResult<u64> {
        if let Some(v) = self
            .cmd
            .contact_ver
            .get(&owner)
            .or_else(|| self.batch.contact_ver.get(&owner))
        {
            return Ok(*v);
        }
        if let Some(v) = self.committed.contact_ver.get(&owner) {
            return Ok(*v);
        }
        // The newest change of each peer is kept, so the owner's newest is the last key.
        let v = match self
            .shared
            .ks(Ks::ContactVer)
            .prefix(keys::prefix_i(owner))
            .next_back()
        {
            Some(g) => keys::de_u(&g.key().map_err(unavailable)?[8..]),
            None => 0,
        };
        self.committed.contact_ver.insert(owner, v);
        Ok(v)
    }
}

/// Starts the writer thread.
pub(super) fn spawn(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Cmd>,
    config: &EmbeddedConfig,
) -> StoreResult<std::thread::JoinHandle<()>> {
    let committed = Committed::load(&shared)?;
    let mut w = Writer {
        shared,
        committed: Some(committed),
        durability: config.durability,
        batch_max: config.batch_max.max(1),
        clock: config.clock.clone(),
    };
    std::thread::Builder::new()
        .name("starling-im-store".into())
        .spawn(move || w.run(rx))
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start the store's writer thread: {e}"))
        })
}

struct Writer {
    shared: Arc<Shared>,
    /// `None` after a failed commit: reloaded before the next batch.
    committed: Option<Committed>,
    durability: Durability,
    batch_max: usize,
    clock: Clock,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Cmd>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        // `recv` fails only once every sender is gone and the queue is empty: nothing is lost.
        while let Ok(first) = rx.recv() {
            batch.push(first);
            #[cfg(test)]
            drop(self.shared.pause.lock());
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.batch(batch.drain(..));
        }
    }

    fn batch(&mut self, cmds: impl Iterator<Item = Cmd>) {
        let committed = match self.committed.take() {
            Some(c) => Ok(c),
            None => Committed::load(&self.shared),
        };
        let mut committed = match committed {
            Ok(c) => c,
            Err(e) => {
                let err = Err(e);
                for cmd in cmds {
                    answer_now(cmd, &err);
                }
                return;
            }
        };
        let now = (self.clock)();
        let mut layer = Layer::default();
        let mut answers: Vec<Answer> = Vec::new();
        for cmd in cmds {
            let mut tx = Tx {
                shared: &self.shared,
                committed: &mut committed,
                batch: &layer,
                cmd: Layer::default(),
                now,
            };
            let (answer, ok) = tx.apply(cmd);
            let top = std::mem::take(&mut tx.cmd);
            if ok {
                layer.merge(top);
            }
            answers.push(answer);
        }
        let result = self.commit(&layer, &committed);
        if result.is_ok() {
            committed.convs.extend(layer.convs);
            committed.conv_ids.extend(layer.conv_ids);
            committed.contact_ver.extend(layer.contact_ver);
            if let Some(c) = layer.counters {
                committed.counters = c;
            }
            self.committed = Some(committed);
        } else {
            tracing::error!(error = ?result, "IM store commit failed; the batch is refused and the writer's caches reloaded");
        }
        for a in answers {
            a(&result);
        }
    }

    fn commit(&self, layer: &Layer, committed: &Committed) -> StoreResult<()> {
        let s = &self.shared;
        let mut b = s.db.batch().durability(match self.durability {
            Durability::Sync => Some(PersistMode::SyncData),
            Durability::Buffer => Some(PersistMode::Buffer),
        });
        for ((ks, k), v) in &layer.kv {
            match v {
                Some(v) => b.insert(s.ks(*ks), k.as_slice(), v.as_slice()),
                None => b.remove(s.ks(*ks), k.as_slice()),
            }
        }
        for (id, m) in &layer.convs {
            b.insert(
                s.ks(Ks::Conv),
                keys::conv(*id),
                ConvRec::from_meta(m).encode_to_vec(),
            );
        }
        for (conv, id) in &layer.conv_ids {
            b.insert(
                s.ks(Ks::ConvKey),
                keys::conv_key(*conv),
                id.to_be_bytes().to_vec(),
            );
        }
        if let Some(c) = layer.counters.filter(|c| *c != committed.counters) {
            let meta = s.ks(Ks::Meta);
            b.insert(
                meta,
                keys::META_NEXT_MSG_ID,
                c.msg_id.to_be_bytes().to_vec(),
            );
            b.insert(
                meta,
                keys::META_NEXT_CONV_ID,
                c.conv_id.to_be_bytes().to_vec(),
            );
            b.insert(
                meta,
                keys::META_NEXT_GID,
                (c.gid as u64).to_be_bytes().to_vec(),
            );
        }
        #[cfg(test)]
        if s.fail_next_commit
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable("injected commit failure".into()));
        }
        b.commit().map_err(unavailable)
    }
}

/// Answers a command that cannot run (the caches could not be loaded).
fn answer_now(cmd: Cmd, err: &StoreResult<()>) {
    let e = err
        .clone()
        .err()
        .unwrap_or_else(|| StoreError::Unavailable("store unavailable".into()));
    match cmd {
        Cmd::Append(_, r) | Cmd::Recall(_, r) => drop(r.send(Err(e))),
        Cmd::CreateGroup(_, r)
        | Cmd::AddMembers(_, r)
        | Cmd::RemoveMembers(_, r)
        | Cmd::UpdateGroup(_, r)
        | Cmd::Dissolve(_, _, r) => drop(r.send(Err(e))),
        Cmd::SetMember(_, r) | Cmd::PutUser(_, r) => drop(r.send(Err(e))),
        Cmd::Mark { reply, .. } => drop(reply.send(Err(e))),
        Cmd::PutContact { reply, .. } => drop(reply.send(Err(e))),
    }
}

impl Tx<'_> {
    /// Runs one command; returns its held answer and whether its writes stand.
    fn apply(&mut self, cmd: Cmd) -> (Answer, bool) {
        fn done<T: Send + 'static>(reply: Reply<T>, r: StoreResult<T>) -> (Answer, bool) {
            let ok = r.is_ok();
            (hold(reply, r), ok)
        }
        match cmd {
            Cmd::Append(req, r) => done(r, self.append(req)),
            Cmd::Recall(req, r) => done(r, self.recall(req)),
            Cmd::CreateGroup(req, r) => done(r, self.create_group(req)),
            Cmd::AddMembers(req, r) => done(r, self.add_members(req)),
            Cmd::RemoveMembers(req, r) => done(r, self.remove_members(req)),
            Cmd::UpdateGroup(req, r) => done(r, self.update_group(req)),
            Cmd::Dissolve(gid, content, r) => done(r, self.dissolve_group(gid, content)),
            Cmd::SetMember(req, r) => done(r, self.set_member(req)),
            Cmd::Mark {
                uid,
                conv,
                kind,
                seq,
                reply,
            } => done(reply, self.mark(uid, conv, kind, seq)),
            Cmd::PutUser(u, r) => done(r, self.put_user(u)),
            Cmd::PutContact {
                owner,
                peer,
                state,
                reply,
            } => done(reply, self.put_contact(owner, peer, state)),
        }
    }
}

//! The writer thread: the only code that writes the database (reference im.md §6.2).
//!
//! State, all owned by the thread (types in `overlay`):
//! - `Committed`: caches of what is on disk (conversation heads and ids it has touched, the
//!   msg_id / conv_id / gid counters, owners' contact versions), loaded lazily.
//! - per batch, a `Layer` of pending writes; per command, another layer on top of it, merged
//!   into the batch's only when the command succeeds (a refused command writes nothing).
//!
//! A batch is written as one fjall batch, synced when durability is `Sync`, and only then are
//! its commands answered. When the commit fails every command of the batch is answered
//! `Unavailable` and the caches are dropped, to be reloaded from disk: no seq or id handed out
//! by the failed batch is skipped or reused.

use super::overlay::{Committed, Layer, Tx};
use super::records::ConvRec;
use super::{Clock, EmbeddedConfig, Ks, Shared, keys, unavailable};
use crate::store::{
    AppendReq, Appended, ContactState, Conv, CreateGroupReq, Durability, GroupChange, MarkKind,
    Marked, MembersChangeReq, RecallReq, SetMemberReq, StoreError, StoreResult, UpdateGroupReq,
    User,
};
use fjall::PersistMode;
use prost::Message as _;
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

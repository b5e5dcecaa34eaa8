//! The embedded [`ImStore`] on fjall (reference im.md §6.2): one process, one directory.
//!
//! - **Writes** go to one OS thread, `starling-im-store`, over a channel. It takes whatever is
//!   waiting (up to `batch_max` commands), applies them in order on an in-memory overlay (so a
//!   later command of the batch sees the earlier ones), writes the batch as one atomic fjall
//!   batch synced with `PersistMode::SyncData`, and only then answers every waiter. A failed
//!   commit answers the whole batch `Unavailable` and drops the writer's caches.
//! - **Reads** run on tokio's blocking pool, each on one fjall snapshot: a batch is seen whole
//!   or not at all.
//! - A second open of the same directory (this or another process) fails: fjall holds a lock
//!   file. Two logic processes need PostgreSQL, not two embedded stores.
//! - fjall logs through `log` at INFO; the binary filters it.
//!
//! # Layout
//! - `keys`: key layouts (big-endian, sign-flipped `i64`).
//! - `records`: the private prost values.
//! - `writer`: the writer thread: commands, batching, the commit, answers.
//! - `overlay`: the writer's caches and pending-write layers, and the reads through them.
//! - `ops`: the rules of append, recall, mark, users, contacts; `groups`: the group commands.
//! - `read`: the snapshot reads.
//! - `tests`: every contract rule, batching, a failed commit, reopen, the lock, a property test
//!   of concurrent appends, SIGKILL of a writing child process, a throughput probe (ignored).

mod groups;
mod keys;
mod ops;
mod overlay;
mod read;
mod records;
mod writer;

#[cfg(test)]
mod tests;

use super::{
    AppendReq, Appended, BoxFuture, Contact, ContactState, Conv, ConvMeta, CreateGroupReq,
    Durability, Group, GroupChange, ImStore, MarkKind, Marked, MemberState, MembersChangeReq,
    RecallReq, SetMemberReq, StoreError, StoreResult, StoredMessage, UpdateGroupReq, User,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use writer::Cmd;

/// The writer's clock: milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in milliseconds since the Unix epoch.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How to open an [`EmbeddedStore`].
#[derive(Clone)]
pub struct EmbeddedConfig {
    /// The store's directory (created when missing).
    pub path: PathBuf,
    /// [`Durability::Sync`]: every batch is fdatasync'd before it is answered.
    pub durability: Durability,
    /// Most commands the writer takes into one batch (one commit); at least 1. Default 512.
    pub batch_max: usize,
    /// fjall's background flush/compaction threads; at least 1. Default 1.
    pub threads: usize,
    /// The writer's clock (`server_ts`, `updated_ts`, recall windows). Default [`system_clock`];
    /// tests set another.
    pub clock: Clock,
}

impl EmbeddedConfig {
    /// The defaults at `path`: sync, batches of 512, one fjall worker thread, the system clock.
    pub fn new(path: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            path: path.into(),
            durability: Durability::Sync,
            batch_max: 512,
            threads: 1,
            clock: Arc::new(system_clock),
        }
    }
}

impl std::fmt::Debug for EmbeddedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedConfig")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("batch_max", &self.batch_max)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Which keyspace (the names are in [`keys::KEYSPACES`], same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ks {
    Msg,
    Dedup,
    Conv,
    ConvKey,
    Member,
    UserConv,
    Contact,
    ContactVer,
    Group,
    User,
    Meta,
}

/// The database and its keyspaces, shared by the writer and the readers.
struct Shared {
    db: Database,
    ks: Vec<Keyspace>,
    epoch: u64,
    /// Test hook: the next commit fails as an I/O error would.
    #[cfg(test)]
    fail_next_commit: std::sync::atomic::AtomicBool,
    /// Test hook: held by a test, the writer waits after taking a batch's first command, so
    /// the commands the test sends meanwhile join that batch.
    #[cfg(test)]
    pause: std::sync::Mutex<()>,
}

impl Shared {
    fn ks(&self, k: Ks) -> &Keyspace {
        &self.ks[k as usize]
    }
}

fn unavailable(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(format!("fjall: {e}"))
}

/// The embedded store. Reads run on tokio's blocking pool, so its methods are awaited inside a
/// tokio runtime. Dropping it stops the writer after it has answered every command already
/// sent (the drop waits for that, a batch or so), and releases the directory's lock once
/// in-flight reads end.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Cmd>>,
    writer: Option<JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `config.path` and starts its writer thread.
    ///
    /// Errors: `Unavailable` when the directory is locked by another open store (this
    /// process or another), cannot be created or read, or holds a damaged record.
    pub fn open(config: EmbeddedConfig) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create store directory {}: {e}",
                config.path.display()
            ))
        })?;
        let db = Database::builder(&config.path)
            .worker_threads(config.threads.max(1))
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::Unavailable(format!(
                    "store at {} is locked: another process or another EmbeddedStore has it open",
                    config.path.display()
                )),
                e => StoreError::Unavailable(format!(
                    "cannot open store at {}: {e}",
                    config.path.display()
                )),
            })?;
        let ks = keys::KEYSPACES
            .iter()
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let meta = &ks[Ks::Meta as usize];
        let epoch = match meta.get(keys::META_EPOCH).map_err(unavailable)? {
            Some(v) => keys::de_u(&v),
            None => {
                let epoch = new_epoch();
                let mut batch = db.batch().durability(Some(PersistMode::SyncData));
                batch.insert(meta, keys::META_EPOCH, epoch.to_be_bytes().to_vec());
                batch.insert(meta, keys::META_SCHEMA, keys::SCHEMA.to_be_bytes().to_vec());
                batch.commit().map_err(unavailable)?;
                epoch
            }
        };
        if config.durability == Durability::Buffer {
            tracing::warn!(
                path = %config.path.display(),
                "IM store durability is `buffer`: acknowledged writes survive a process crash but not a power loss"
            );
        }
        let shared = Arc::new(Shared {
            db,
            ks,
            epoch,
            #[cfg(test)]
            fail_next_commit: Default::default(),
            #[cfg(test)]
            pause: Default::default(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = writer::spawn(shared.clone(), rx, &config)?;
        Ok(EmbeddedStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Sends a command to the writer and awaits its answer.
    async fn write<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Cmd,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store's writer has stopped".into());
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(cmd(reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs a point read (one key) on a fresh snapshot, on the caller's thread: a lookup in
    /// fjall's memtable or block cache takes microseconds, less than handing it to the
    /// blocking pool and back (two thread wake-ups, which were most of logic's time per send
    /// in the P2P bench). Scans stay on the pool ([`EmbeddedStore::read`]).
    fn point<T>(&self, f: impl FnOnce(&read::Reader) -> StoreResult<T>) -> StoreResult<T> {
        f(&read::Reader::new(&self.shared))
    }

    /// Runs a read on a fresh snapshot on tokio's blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&read::Reader) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&read::Reader::new(&shared)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// A random non-zero u64 (uuid v4 bytes: the OS's randomness).
pub(crate) fn new_epoch() -> u64 {
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let v = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
            ^ u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
        if v != 0 {
            return v;
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered everything queued.
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl ImStore for EmbeddedStore {
    fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    fn append(&self, req: AppendReq) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(self.write(|r| Cmd::Append(req, r)))
    }

    fn recall(&self, req: RecallReq) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(self.write(|r| Cmd::Recall(req, r)))
    }

    fn create_group(&self, req: CreateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(self.write(|r| Cmd::CreateGroup(req, r)))
    }

    fn add_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(self.write(|r| Cmd::AddMembers(req, r)))
    }

    fn remove_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(self.write(|r| Cmd::RemoveMembers(req, r)))
    }

    fn update_group(&self, req: UpdateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(self.write(|r| Cmd::UpdateGroup(req, r)))
    }

    fn dissolve_group(&self, gid: i64, content: String) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(self.write(move |r| Cmd::Dissolve(gid, content, r)))
    }

    fn set_member(&self, req: SetMemberReq) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(|r| Cmd::SetMember(req, r)))
    }

    fn mark(
        &self,
        uid: i64,
        conv: Conv,
        mark: MarkKind,
        seq: u64,
    ) -> BoxFuture<'_, StoreResult<Marked>> {
        Box::pin(self.write(move |r| Cmd::Mark {
            uid,
            conv,
            kind: mark,
            seq,
            reply: r,
        }))
    }

    fn put_user(&self, user: User) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(|r| Cmd::PutUser(user, r)))
    }

    fn put_contact(
        &self,
        owner: i64,
        peer: i64,
        contact: Option<ContactState>,
    ) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.write(move |r| Cmd::PutContact {
            owner,
            peer,
            state: contact,
            reply: r,
        }))
    }

    fn user(&self, uid: i64) -> BoxFuture<'_, StoreResult<Option<User>>> {
        let out = self.point(|r| r.user(uid));
        Box::pin(async move { out })
    }

    fn contact(&self, owner: i64, peer: i64) -> BoxFuture<'_, StoreResult<Option<Contact>>> {
        let out = self.point(|r| r.contact(owner, peer));
        Box::pin(async move { out })
    }

    fn contacts(
        &self,
        owner: i64,
        since_version: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<Contact>>> {
        Box::pin(self.read(move |r| r.contacts(owner, since_version, limit)))
    }

    fn conversation(&self, conv: Conv) -> BoxFuture<'_, StoreResult<Option<ConvMeta>>> {
        let out = self.point(|r| r.head(conv));
        Box::pin(async move { out })
    }

    fn group(&self, gid: i64) -> BoxFuture<'_, StoreResult<Option<Group>>> {
        let out = self.point(|r| r.group(gid));
        Box::pin(async move { out })
    }

    fn member(&self, conv: Conv, uid: i64) -> BoxFuture<'_, StoreResult<Option<MemberState>>> {
        let out = self.point(|r| r.member(conv, uid));
        Box::pin(async move { out })
    }

    fn members(
        &self,
        conv: Conv,
        after_uid: i64,
        limit: usize,
        current_only: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<MemberState>>> {
        Box::pin(self.read(move |r| r.members(conv, after_uid, limit, current_only)))
    }

    fn range(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(self.read(move |r| r.range(conv, from, to, limit, false)))
    }

    fn range_back(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(self.read(move |r| r.range(conv, from, to, limit, true)))
    }

    fn unread(
        &self,
        conv: Conv,
        viewer: i64,
        after: u64,
        to: u64,
        cap: u32,
    ) -> BoxFuture<'_, StoreResult<u32>> {
        Box::pin(self.read(move |r| r.unread(conv, viewer, after, to, cap)))
    }

    fn last_visible(
        &self,
        conv: Conv,
        floor: u64,
        to: u64,
    ) -> BoxFuture<'_, StoreResult<Option<StoredMessage>>> {
        Box::pin(self.read(move |r| r.last_visible(conv, floor, to)))
    }

    fn directory(
        &self,
        uid: i64,
        since_ms: i64,
        after_conv_id: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<(ConvMeta, MemberState)>>> {
        Box::pin(self.read(move |r| r.directory(uid, since_ms, after_conv_id, limit)))
    }
}

//! The PostgreSQL [`ImStore`] (reference im.md §6.3, §6.4): any number of logic nodes share
//! one database; the database orders them.
//!
//! - **Writes** run one transaction per call (READ COMMITTED). A write to a conversation first
//!   takes its row lock (`SELECT … FROM im_conversation … FOR UPDATE`): the allocator of §6.4.
//!   Under that lock it checks dedup and membership, inserts the message with
//!   `seq = last_seq + 1`, updates the head and commits: a seq is never handed out without its
//!   message, on any node. Group and membership changes take the same lock, so a membership
//!   read under it is coherent across nodes. P2P and NOTICE conversations are created by
//!   `INSERT … ON CONFLICT (kind, a, b) DO NOTHING` and then locked.
//! - **Retries**: a unique violation (the dedup index is the backstop), a serialization failure
//!   or a deadlock rolls the whole transaction back and the call runs again (at most
//!   [`MAX_ATTEMPTS`] times): never a partial write, never a committed hole.
//! - **Deadline**: every call is bounded by [`PgConfig::timeout`] (pool wait, connect, queries,
//!   commit). Expiry, a lost connection or a database that is down answer
//!   [`StoreError::Unavailable`]; so does a commit whose outcome is unknown (the client retries
//!   with the same `client_msg_id` and dedup resolves it, §7.2).
//! - **Reads** are single statements: each sees one snapshot.
//! - **Start**: [`PgStore::open`] applies the versioned migrations (refinery, under a session
//!   advisory lock so several nodes may start at once) and reads or makes the store epoch.
//!
//! # Layout
//! - `migrate`: migrations (`migrations/V*.sql`), the advisory lock, the epoch.
//! - `tx`: the transaction wrapper, row conversions, the conversation lock and the allocator.
//! - `write`: append, recall, mark, users, contacts; `groups`: the group commands.
//! - `read`: the reads.
//! - `tests`: the shared contract suite on PostgreSQL, two nodes racing on one conversation,
//!   a killed and restarted server, a hung one.

mod groups;
mod migrate;
mod read;
mod tx;
mod write;

#[cfg(test)]
mod tests;

use super::{
    AppendReq, Appended, BoxFuture, Contact, ContactState, Conv, ConvMeta, CreateGroupReq, Group,
    GroupChange, ImStore, MarkKind, Marked, MemberState, MembersChangeReq, RecallReq, SetMemberReq,
    StoreError, StoreResult, StoredMessage, UpdateGroupReq, User,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use starling_cluster::metrics::{DependencyErrors, ErrorKind};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub use super::embedded::{Clock, system_clock};

/// Most runs of one call when PostgreSQL asks for a retry (unique violation, serialization
/// failure, deadlock), within the call's deadline.
pub const MAX_ATTEMPTS: u32 = 5;

/// How to open a [`PgStore`].
#[derive(Clone)]
pub struct PgConfig {
    /// libpq-style URL or key=value string, e.g. `postgres://user:pw@host:5432/starling`.
    pub url: String,
    /// Most connections this node holds; at least 1. Default 16.
    pub pool_size: usize,
    /// Every store call's deadline (pool wait, connect, queries, commit). Expiry answers
    /// `Unavailable` with nothing acknowledged. Default 5 s.
    pub timeout: Duration,
    /// Longest wait for a pooled connection when all are busy (at most `timeout`); past it
    /// the call answers `Overloaded` with nothing acknowledged. Default 5 s (= `timeout`).
    pub pool_wait: Duration,
    /// The store's clock in ms since the Unix epoch (`server_ts`, `updated_ts`, recall windows).
    /// Default [`system_clock`]; tests set another.
    pub clock: Clock,
}

impl PgConfig {
    /// The defaults for `url`: 16 connections, 5 s deadline, the system clock.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            pool_size: 16,
            timeout: Duration::from_secs(5),
            pool_wait: Duration::from_secs(5),
            clock: Arc::new(system_clock),
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("pool_wait", &self.pool_wait)
            .finish_non_exhaustive()
    }
}

/// Why one run of a call failed: a rule of the contract, or PostgreSQL.
#[derive(Debug)]
enum Error {
    Store(StoreError),
    Pg(tokio_postgres::Error),
    /// COMMIT failed without an answer: the outcome is unknown, so the call is never re-run
    /// (the client's retry with the same `client_msg_id` resolves it through dedup).
    Commit(tokio_postgres::Error),
    Pool(String),
    /// No connection from the pool within the deadline (PostgreSQL not answering a new
    /// connection).
    PoolTimeout(String),
    /// Every pooled connection busy past `pool_wait`.
    PoolBusy(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Pg(e),
            e @ deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                Error::PoolBusy(e.to_string())
            }
            e @ deadpool_postgres::PoolError::Timeout(_) => Error::PoolTimeout(e.to_string()),
            e => Error::Pool(e.to_string()),
        }
    }
}

type R<T> = Result<T, Error>;

impl Error {
    /// Another run may succeed and cannot double-apply: PostgreSQL rolled the transaction
    /// back and asks for a retry (unique violation, serialization failure, deadlock), or the
    /// connection failed before COMMIT was sent (nothing committed; a pooled connection
    /// may have died with a restarted server, and the next run takes a fresh one).
    fn retryable(&self) -> bool {
        match self {
            Error::Pg(e) => match e.code() {
                Some(c) => {
                    *c == SqlState::UNIQUE_VIOLATION
                        || *c == SqlState::T_R_SERIALIZATION_FAILURE
                        || *c == SqlState::T_R_DEADLOCK_DETECTED
                }
                None => true,
            },
            Error::Pool(_)
            | Error::PoolTimeout(_)
            | Error::PoolBusy(_)
            | Error::Store(_)
            | Error::Commit(_) => false,
        }
    }

    fn into_store(self) -> StoreError {
        match self {
            Error::Store(e) => e,
            // A string PostgreSQL cannot store (a NUL character in a text column).
            Error::Pg(e)
                if e.code().is_some_and(|c| {
                    *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                        || *c == SqlState::UNTRANSLATABLE_CHARACTER
                }) =>
            {
                StoreError::BadRequest(format!("unstorable text: {}", describe(&e)))
            }
            Error::Pg(e) => {
                let e = describe(&e);
                tracing::warn!(error = %e, "IM store: PostgreSQL error");
                StoreError::Unavailable(format!("postgres: {e}"))
            }
            Error::Commit(e) => {
                let e = describe(&e);
                tracing::warn!(error = %e, "IM store: COMMIT failed, outcome unknown");
                StoreError::Unavailable(format!("postgres: commit outcome unknown: {e}"))
            }
            Error::Pool(e) | Error::PoolTimeout(e) => {
                StoreError::Unavailable(format!("postgres pool: {e}"))
            }
            Error::PoolBusy(e) => StoreError::Overloaded(format!("postgres pool: {e}")),
        }
    }
}

/// The error with its cause (`tokio_postgres::Error` alone prints "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// The PostgreSQL store: a connection pool and the clock. Cheap to share behind an `Arc`;
/// every method runs on the caller's tokio runtime.
pub struct PgStore {
    pool: Pool,
    clock: Clock,
    timeout: Duration,
    epoch: u64,
    errors: Arc<DependencyErrors>,
}

impl PgStore {
    /// Connects, applies the migrations and reads (or makes) the store epoch.
    ///
    /// Errors: `BadRequest` for a URL that does not parse; `Unavailable` when PostgreSQL
    /// cannot be reached within `timeout` or a migration fails.
    pub async fn open(config: PgConfig) -> Result<PgStore, StoreError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::BadRequest(format!("im.postgres_url: {e}")))?;
        pg.connect_timeout(config.timeout);
        let epoch = tokio::time::timeout(config.timeout * 4, migrate::run(&pg))
            .await
            .map_err(|_| StoreError::Unavailable("postgres: migrations timed out".into()))?
            .map_err(Error::into_store)?;
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_wait.min(config.timeout)))
            .create_timeout(Some(config.timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
        Ok(PgStore {
            pool,
            clock: config.clock,
            timeout: config.timeout,
            epoch,
            errors: DependencyErrors::new(),
        })
    }

    /// Calls that answered `Unavailable`, by kind: `timeout` when the deadline passed or no
    /// pooled connection came within it, `error` otherwise (connection refused or lost, a
    /// failed COMMIT, a PostgreSQL error). Refusals of the request itself (`BadRequest`,
    /// `NotFound` ...) are not counted: PostgreSQL answered.
    pub fn errors(&self) -> &Arc<DependencyErrors> {
        &self.errors
    }

    /// Counts `e` when it makes the call `Unavailable`, and converts it.
    fn failed(&self, e: Error) -> StoreError {
        let kind = match e {
            Error::PoolTimeout(_) | Error::PoolBusy(_) => ErrorKind::Timeout,
            _ => ErrorKind::Error,
        };
        let e = e.into_store();
        if matches!(e, StoreError::Unavailable(_) | StoreError::Overloaded(_)) {
            self.errors.record(kind);
        }
        e
    }

    /// Runs `once` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] runs asked for a
    /// retry; all within the deadline.
    async fn call<T, F, Fut>(&self, what: &'static str, once: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = R<T>>,
    {
        let attempts = async {
            let mut attempt = 1;
            loop {
                match once().await {
                    Ok(v) => return Ok(v),
                    Err(e) if e.retryable() && attempt < MAX_ATTEMPTS => {
                        tracing::debug!(what, attempt, error = ?e, "IM store: retrying a transaction");
                        // A short pause when the connection failed (the server may be coming
                        // back); none when PostgreSQL itself asked for the retry.
                        if matches!(&e, Error::Pg(p) if p.code().is_none()) {
                            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt)))
                                .await;
                        }
                        attempt += 1;
                    }
                    Err(e) => return Err(self.failed(e)),
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err({
                self.errors.record(ErrorKind::Timeout);
                StoreError::Unavailable(format!(
                    "postgres: {what} passed its deadline of {:?}",
                    self.timeout
                ))
            }),
        }
    }
}

impl ImStore for PgStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn server_errors(&self) -> Option<Arc<DependencyErrors>> {
        Some(self.errors.clone())
    }

    fn append(&self, req: AppendReq) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(async move { self.call("append", || self.append_once(&req)).await })
    }

    fn recall(&self, req: RecallReq) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(async move { self.call("recall", || self.recall_once(&req)).await })
    }

    fn create_group(&self, req: CreateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(async move {
            self.call("create_group", || self.create_group_once(&req))
                .await
        })
    }

    fn add_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(async move {
            self.call("add_members", || self.add_members_once(&req))
                .await
        })
    }

    fn remove_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(async move {
            self.call("remove_members", || self.remove_members_once(&req))
                .await
        })
    }

    fn update_group(&self, req: UpdateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(async move {
            self.call("update_group", || self.update_group_once(&req))
                .await
        })
    }

    fn dissolve_group(&self, gid: i64, content: String) -> BoxFuture<'_, StoreResult<GroupChange>> {
        Box::pin(async move {
            self.call("dissolve_group", || self.dissolve_once(gid, &content))
                .await
        })
    }

    fn set_member(&self, req: SetMemberReq) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.call("set_member", || self.set_member_once(&req)).await })
    }

    fn mark(
        &self,
        uid: i64,
        conv: Conv,
        mark: MarkKind,
        seq: u64,
    ) -> BoxFuture<'_, StoreResult<Marked>> {
        Box::pin(async move {
            self.call("mark", || self.mark_once(uid, conv, mark, seq))
                .await
        })
    }

    fn put_user(&self, user: User) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.call("put_user", || self.put_user_once(&user)).await })
    }

    fn put_contact(
        &self,
        owner: i64,
        peer: i64,
        contact: Option<ContactState>,
    ) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            self.call("put_contact", || {
                self.put_contact_once(owner, peer, contact.as_ref())
            })
            .await
        })
    }

    fn user(&self, uid: i64) -> BoxFuture<'_, StoreResult<Option<User>>> {
        Box::pin(async move { self.call("user", || self.read_user(uid)).await })
    }

    fn contact(&self, owner: i64, peer: i64) -> BoxFuture<'_, StoreResult<Option<Contact>>> {
        Box::pin(async move {
            self.call("contact", || self.read_contact(owner, peer))
                .await
        })
    }

    fn contacts(
        &self,
        owner: i64,
        since_version: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<Contact>>> {
        Box::pin(async move {
            self.call("contacts", || {
                self.read_contacts(owner, since_version, limit)
            })
            .await
        })
    }

    fn conversation(&self, conv: Conv) -> BoxFuture<'_, StoreResult<Option<ConvMeta>>> {
        Box::pin(async move { self.call("conversation", || self.read_head(conv)).await })
    }

    fn group(&self, gid: i64) -> BoxFuture<'_, StoreResult<Option<Group>>> {
        Box::pin(async move { self.call("group", || self.read_group(gid)).await })
    }

    fn member(&self, conv: Conv, uid: i64) -> BoxFuture<'_, StoreResult<Option<MemberState>>> {
        Box::pin(async move { self.call("member", || self.read_member(conv, uid)).await })
    }

    fn members(
        &self,
        conv: Conv,
        after_uid: i64,
        limit: usize,
        current_only: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<MemberState>>> {
        Box::pin(async move {
            self.call("members", || {
                self.read_members(conv, after_uid, limit, current_only)
            })
            .await
        })
    }

    fn range(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(async move {
            self.call("range", || self.read_range(conv, from, to, limit, false))
                .await
        })
    }

    fn range_back(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(async move {
            self.call("range_back", || {
                self.read_range(conv, from, to, limit, true)
            })
            .await
        })
    }

    fn unread(
        &self,
        conv: Conv,
        viewer: i64,
        after: u64,
        to: u64,
        cap: u32,
    ) -> BoxFuture<'_, StoreResult<u32>> {
        Box::pin(async move {
            self.call("unread", || self.read_unread(conv, viewer, after, to, cap))
                .await
        })
    }

    fn last_visible(
        &self,
        conv: Conv,
        floor: u64,
        to: u64,
    ) -> BoxFuture<'_, StoreResult<Option<StoredMessage>>> {
        Box::pin(async move {
            self.call("last_visible", || self.read_last_visible(conv, floor, to))
                .await
        })
    }

    fn directory(
        &self,
        uid: i64,
        since_ms: i64,
        after_conv_id: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<(ConvMeta, MemberState)>>> {
        Box::pin(async move {
            self.call("directory", || {
                self.read_directory(uid, since_ms, after_conv_id, limit)
            })
            .await
        })
    }
}

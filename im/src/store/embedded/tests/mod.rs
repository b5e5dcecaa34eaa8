//! The embedded store's tests: every contract rule and the property test of concurrent
//! appends (`rules`, from the shared suite in `store::contract`), batching and a failed commit
//! (here), persistence and locking (here), a SIGKILL of a writing child process (`crash`), and
//! a throughput probe (`throughput`, ignored).

mod crash;
mod throughput;

pub(super) use crate::store::contract::{T0, text};

use super::writer::Cmd;
use super::{EmbeddedConfig, EmbeddedStore};
use crate::store::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::oneshot;

/// A store in a temporary directory with a clock the test moves.
pub(super) struct T {
    pub store: EmbeddedStore,
    pub clock: Arc<AtomicI64>,
    pub dir: tempfile::TempDir,
    pub durability: Durability,
}

pub(super) fn config(
    path: &std::path::Path,
    clock: &Arc<AtomicI64>,
    durability: Durability,
) -> EmbeddedConfig {
    let c = clock.clone();
    EmbeddedConfig {
        durability,
        clock: Arc::new(move || c.load(Ordering::SeqCst)),
        ..EmbeddedConfig::new(path)
    }
}

impl T {
    pub fn open(durability: Durability) -> T {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let store = EmbeddedStore::open(config(dir.path(), &clock, durability)).unwrap();
        T {
            store,
            clock,
            dir,
            durability,
        }
    }

    /// Closes the store and opens its directory again.
    pub fn reopen(self) -> T {
        let T {
            store,
            clock,
            dir,
            durability,
        } = self;
        drop(store);
        let store = EmbeddedStore::open(config(dir.path(), &clock, durability)).unwrap();
        T {
            store,
            clock,
            dir,
            durability,
        }
    }
}

/// Sends appends straight into the writer's queue while it is paused, so they are one batch.
fn one_batch(
    store: &EmbeddedStore,
    reqs: Vec<AppendReq>,
) -> Vec<oneshot::Receiver<StoreResult<Appended>>> {
    let guard = store.shared.pause.lock().unwrap();
    let tx = store.tx.as_ref().unwrap();
    let rxs = reqs
        .into_iter()
        .map(|r| {
            let (reply, rx) = oneshot::channel();
            tx.send(Cmd::Append(r, reply)).unwrap();
            rx
        })
        .collect();
    drop(guard);
    rxs
}

#[tokio::test]
async fn a_batch_sees_its_own_writes_and_a_refused_command_disturbs_nothing() {
    let t = T::open(Durability::Sync);
    let c = Conv::p2p(1, 2);
    let rxs = one_batch(
        &t.store,
        vec![
            text(c, 1, "a", "hello"),
            text(c, 1, "a", "hello"), // duplicate of the first, same batch
            text(c, 1, "a", "other"), // same id, other content: Conflict
            text(Conv::p2p(3, 3), 3, "x", ""), // to oneself: BadRequest
            text(c, 2, "b", "hi"),
        ],
    );
    let mut out = Vec::new();
    for rx in rxs {
        out.push(rx.await.unwrap());
    }
    let first = out[0].as_ref().unwrap();
    assert_eq!((first.message.seq, first.duplicate), (1, false));
    let dup = out[1].as_ref().unwrap();
    assert_eq!(
        (dup.message.seq, dup.message.msg_id, dup.duplicate),
        (1, first.message.msg_id, true)
    );
    assert!(matches!(out[2], Err(StoreError::Conflict(_))));
    assert!(matches!(out[3], Err(StoreError::BadRequest(_))));
    assert_eq!(out[4].as_ref().unwrap().message.seq, 2);
    let head = t.store.conversation(c).await.unwrap().unwrap();
    assert_eq!(head.last_seq, 2);
    assert_eq!(t.store.range(c, 1, 10, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_commit_refuses_the_whole_batch_and_hands_out_its_seqs_again() {
    let t = T::open(Durability::Sync);
    let c = Conv::p2p(1, 2);
    let a1 = t.store.append(text(c, 1, "a1", "x")).await.unwrap();
    t.store
        .shared
        .fail_next_commit
        .store(true, Ordering::SeqCst);
    let rxs = one_batch(
        &t.store,
        vec![
            text(c, 1, "a2", "x"),
            text(c, 2, "b1", "y"),
            text(Conv::p2p(5, 6), 5, "n", "z"),
        ],
    );
    for rx in rxs {
        assert!(matches!(rx.await.unwrap(), Err(StoreError::Unavailable(_))));
    }
    assert_eq!(t.store.conversation(c).await.unwrap().unwrap().last_seq, 1);
    assert_eq!(t.store.conversation(Conv::p2p(5, 6)).await.unwrap(), None);
    // The retry gets the seq the failed batch had taken: nothing skipped, nothing reused.
    let a2 = t.store.append(text(c, 1, "a2", "x")).await.unwrap();
    assert_eq!((a2.message.seq, a2.duplicate), (2, false));
    assert!(a2.message.msg_id > a1.message.msg_id);
    let n = t
        .store
        .append(text(Conv::p2p(5, 6), 5, "n", "z"))
        .await
        .unwrap();
    assert_ne!(n.conv_id, a2.conv_id);
    let seqs: Vec<u64> = t
        .store
        .range(c, 1, 10, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn reopen_keeps_everything_and_continues_the_counters() {
    let t = T::open(Durability::Sync);
    let epoch = t.store.epoch();
    assert_ne!(epoch, 0);
    let c = Conv::p2p(1, 2);
    let m1 = t.store.append(text(c, 1, "a", "one")).await.unwrap();
    t.store.append(text(c, 2, "b", "two")).await.unwrap();
    let g = t
        .store
        .create_group(CreateGroupReq {
            owner: 1,
            members: vec![2],
            ..Default::default()
        })
        .await
        .unwrap();
    t.store
        .put_contact(
            1,
            2,
            Some(ContactState {
                kind: ContactKind::Friend,
                remark: "r".into(),
            }),
        )
        .await
        .unwrap();
    t.store
        .put_user(User {
            uid: 1,
            name: "one".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = t.reopen();
    assert_eq!(
        t.store.epoch(),
        epoch,
        "the epoch is the store's, not the process's"
    );
    let msgs = t.store.range(c, 1, 10, 10).await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(t.store.member(c, 2).await.unwrap().unwrap().read_seq, 2);
    assert_eq!(t.store.group(g.gid).await.unwrap().unwrap().member_count, 2);
    assert_eq!(t.store.contacts(1, 0, 10).await.unwrap().len(), 1);
    assert_eq!(t.store.user(1).await.unwrap().unwrap().name, "one");
    // The dedup index survived, and the counters continue.
    let dup = t.store.append(text(c, 1, "a", "one")).await.unwrap();
    assert_eq!((dup.duplicate, dup.message.seq), (true, 1));
    let m3 = t.store.append(text(c, 1, "c", "three")).await.unwrap();
    assert_eq!(m3.message.seq, 3);
    assert!(m3.message.msg_id > g.message.msg_id && g.message.msg_id > m1.message.msg_id);
    let other = t
        .store
        .append(text(Conv::p2p(7, 8), 7, "d", "x"))
        .await
        .unwrap();
    assert!(other.conv_id > g.conv_id, "conv ids are not reused");
    let g2 = t
        .store
        .create_group(CreateGroupReq {
            owner: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(g2.gid, g.gid);
    assert_eq!(
        t.store.put_contact(1, 3, None).await.unwrap(),
        2,
        "contact versions continue"
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails_clearly() {
    let t = T::open(Durability::Sync);
    let err = EmbeddedStore::open(config(t.dir.path(), &t.clock, Durability::Sync))
        .err()
        .unwrap();
    match &err {
        StoreError::Unavailable(s) => assert!(s.contains("locked"), "{s}"),
        e => panic!("{e:?}"),
    }
    // Closing releases it.
    let t = t.reopen();
    t.store
        .append(text(Conv::p2p(1, 2), 1, "a", "x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn dropping_the_store_answers_what_was_queued() {
    let t = T::open(Durability::Sync);
    let c = Conv::p2p(1, 2);
    let rxs = one_batch(
        &t.store,
        (0..20).map(|i| text(c, 1, &format!("m{i}"), "x")).collect(),
    );
    let T {
        store,
        clock,
        dir,
        durability,
    } = t;
    drop(store);
    for rx in rxs {
        rx.await.unwrap().unwrap();
    }
    let t = T {
        store: EmbeddedStore::open(config(dir.path(), &clock, durability)).unwrap(),
        clock,
        dir,
        durability,
    };
    assert_eq!(t.store.conversation(c).await.unwrap().unwrap().last_seq, 20);
}

/// The shared contract suite on a fresh embedded store (`Durability::Buffer`: the rules do
/// not depend on fsync, and it keeps the suite fast).
mod rules {
    use super::super::{EmbeddedConfig, EmbeddedStore};
    use crate::store::Durability;
    use crate::store::contract::{self, H, prop};
    use proptest::prelude::*;
    use std::sync::Arc;

    async fn open() -> H {
        let dir = tempfile::tempdir().unwrap();
        let (clock, c) = contract::test_clock();
        let store = EmbeddedStore::open(EmbeddedConfig {
            durability: Durability::Buffer,
            clock: c,
            ..EmbeddedConfig::new(dir.path())
        })
        .unwrap();
        H {
            store: Arc::new(store),
            clock,
            _keep: Box::new(dir),
        }
    }

    contract::contract_tests!(open);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn concurrent_appends_keep_seqs_contiguous_and_dedup_exact(ops in prop::ops()) {
            prop::run(ops, open);
        }
    }
}

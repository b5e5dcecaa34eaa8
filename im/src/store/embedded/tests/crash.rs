//! "The writer killed mid-batch leaves no partial state" (reference im.md §7.2, §9 T3): a child
//! process (this test binary, filtered to `child_appends_until_killed`) appends with durability
//! Sync from several tasks and prints each acknowledged append; the parent SIGKILLs it after
//! some acks, reopens the directory and checks (several rounds on one directory) that every ack is there, the seqs are contiguous,
//! and every message has its dedup entry and is covered by its conversation's head.

use super::super::records::{DedupRec, decode};
use super::super::{EmbeddedStore, Ks, keys};
use super::{T0, config, text};
use crate::store::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

const DIR_ENV: &str = "STARLING_IM_STORE_CRASH_DIR";
const CONVS: [(i64, i64); 3] = [(1, 2), (1, 3), (2, 3)];
const ROUND_ENV: &str = "STARLING_IM_STORE_CRASH_ROUND";
const ROUNDS: u32 = 6;

/// The child's body; a no-op unless the parent set the directory.
#[test]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let round = std::env::var(ROUND_ENV).unwrap_or_default();
    let clock = Arc::new(AtomicI64::new(T0));
    let store =
        Arc::new(EmbeddedStore::open(config(dir.as_ref(), &clock, Durability::Sync)).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for task in 0..6usize {
            let store = store.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded so an orphaned child ends on its own.
                for i in 0..100_000u32 {
                    let c = (task + i as usize) % CONVS.len();
                    let (a, b) = CONVS[c];
                    let cmid = format!("r{round}-t{task}-{i}");
                    let r = store
                        .append(text(Conv::p2p(a, b), a, &cmid, "x"))
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {c} {} {cmid}", r.message.seq).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Runs the child on `dir` until it has printed `kill_after` acks, SIGKILLs it, and returns
/// every ack it printed (those printed before the kill are still in the pipe).
fn run_child(dir: &std::path::Path, round: u32, kill_after: usize) -> Vec<(usize, u64, String)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::embedded::tests::crash::child_appends_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acks = Vec::new();
    let mut killed = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        acks.push((
            f[0].parse::<usize>().unwrap(),
            f[1].parse::<u64>().unwrap(),
            f[2].to_string(),
        ));
        if acks.len() == 1 && round == 0 {
            // Another process holds the directory: this one cannot open it.
            let clock = Arc::new(AtomicI64::new(T0));
            match EmbeddedStore::open(config(dir, &clock, Durability::Sync)) {
                Err(StoreError::Unavailable(e)) => assert!(e.contains("locked"), "{e}"),
                Err(e) => panic!("{e:?}"),
                Ok(_) => panic!("opened a directory another process holds"),
            }
        }
        if !killed && acks.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed && !status.success(),
        "the child was killed mid-run ({status:?}, {} acks)",
        acks.len()
    );
    acks
}

/// Reopens `dir` and checks every ack and the store's internal consistency.
async fn check(dir: &std::path::Path, acks: &[(usize, u64, String)]) {
    let clock = Arc::new(AtomicI64::new(T0));
    let store = EmbeddedStore::open(config(dir, &clock, Durability::Sync)).unwrap();
    for (c, seq, cmid) in acks {
        let (a, b) = CONVS[*c];
        let m = store.range(Conv::p2p(a, b), *seq, *seq, 1).await.unwrap();
        assert_eq!(
            m.first().map(|m| m.client_msg_id.as_str()),
            Some(cmid.as_str()),
            "acked {c} {seq} {cmid}"
        );
    }
    let shared = &store.shared;
    for (a, b) in CONVS {
        let conv = Conv::p2p(a, b);
        let Some(head) = store.conversation(conv).await.unwrap() else {
            continue;
        };
        // Raw keys: no message beyond the head, none missing below it.
        let seqs: Vec<u64> = shared
            .ks(Ks::Msg)
            .prefix(keys::prefix_u(head.conv_id))
            .map(|g| keys::de_u(&g.key().unwrap()[8..]))
            .collect();
        assert_eq!(
            seqs,
            (1..=head.last_seq).collect::<Vec<_>>(),
            "{conv:?}: contiguous and the head covers them"
        );
        for m in store.range(conv, 1, u64::MAX, usize::MAX).await.unwrap() {
            let d = shared
                .ks(Ks::Dedup)
                .get(keys::dedup(head.conv_id, m.sender, &m.client_msg_id))
                .unwrap();
            let d: DedupRec = decode("dedup", &d.expect("a dedup entry")).unwrap();
            assert_eq!(
                (d.seq, d.msg_id),
                (m.seq, m.msg_id),
                "{conv:?} seq {} has its dedup entry",
                m.seq
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_writer_leaves_no_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut acks = Vec::new();
    // Several kills at different points, each followed by a full check: one kill lands in a
    // commit's fsync only part of the time.
    for round in 0..ROUNDS {
        acks.extend(run_child(dir.path(), round, 40 + 70 * round as usize));
        check(dir.path(), &acks).await;
    }
    // And the store goes on: the next append takes the next seq.
    let clock = Arc::new(AtomicI64::new(T0));
    let store = EmbeddedStore::open(config(dir.path(), &clock, Durability::Sync)).unwrap();
    let head = store.conversation(Conv::p2p(1, 2)).await.unwrap().unwrap();
    let next = store
        .append(text(Conv::p2p(1, 2), 1, "after", "x"))
        .await
        .unwrap();
    assert_eq!(next.message.seq, head.last_seq + 1);
}

//! Property: appends from several concurrent tasks into a few conversations, with repeated
//! `client_msg_id`s, leave each conversation's seqs contiguous from 1, store each
//! `(conv, sender, client_msg_id)` once, and answer every repeat with the original seq.

use super::{H, text};
use crate::store::*;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

const CONVS: [Conv; 3] = [
    Conv {
        kind: starling_proto::im::v1::ConvKind::P2p,
        a: 1,
        b: 2,
    },
    Conv {
        kind: starling_proto::im::v1::ConvKind::P2p,
        a: 1,
        b: 3,
    },
    Conv {
        kind: starling_proto::im::v1::ConvKind::Group,
        a: 100,
        b: 0,
    },
];

fn sender(conv: usize, pick: usize) -> i64 {
    match conv {
        0 => [1, 2][pick % 2],
        1 => [1, 3][pick % 2],
        _ => [1, 2, 3][pick % 3],
    }
}

/// (task, conv, sender pick, client_msg_id number)
pub(crate) type Op = (usize, usize, usize, u8);

/// The strategy: up to 80 appends spread over 4 tasks, 3 conversations, 3 senders, 6 ids.
pub(crate) fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    proptest::collection::vec((0..4usize, 0..3usize, 0..3usize, 0..6u8), 1..80)
}

/// Runs `ops` on a fresh store from `open` (called inside the case's own runtime) and checks
/// the property.
pub(crate) fn run<F: Future<Output = H>>(ops: Vec<Op>, open: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t = std::sync::Arc::new(open().await);
        let g = CreateGroupReq {
            gid: 100,
            owner: 1,
            members: vec![2, 3],
            ..Default::default()
        };
        t.store.create_group(g).await.unwrap();
        let mut per_task: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
        for op in ops {
            per_task.entry(op.0).or_default().push(op);
        }
        let mut handles = Vec::new();
        for (_, ops) in per_task {
            let t = t.clone();
            handles.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for (_, c, pick, id) in ops {
                    let s = sender(c, pick);
                    let cmid = format!("id{id}");
                    // Same key, same content: a retry, never a conflict.
                    let a = t
                        .store
                        .append(text(CONVS[c], s, &cmid, &format!("{c}/{s}/{cmid}")))
                        .await
                        .unwrap();
                    out.push(((c, s, cmid), a));
                }
                out
            }));
        }
        let mut answers: BTreeMap<(usize, i64, String), Vec<Appended>> = BTreeMap::new();
        for h in handles {
            for (k, a) in h.await.unwrap() {
                answers.entry(k).or_default().push(a);
            }
        }
        for (k, v) in &answers {
            assert_eq!(
                v.iter().filter(|a| !a.duplicate).count(),
                1,
                "{k:?} stored once"
            );
            let first = v.iter().find(|a| !a.duplicate).unwrap();
            for a in v {
                assert_eq!(
                    (a.message.seq, a.message.msg_id),
                    (first.message.seq, first.message.msg_id),
                    "{k:?}"
                );
            }
        }
        for (c, conv) in CONVS.iter().enumerate() {
            let head = t.store.conversation(*conv).await.unwrap();
            let last = head.map_or(0, |h| h.last_seq);
            let msgs = t.store.range(*conv, 1, u64::MAX, usize::MAX).await.unwrap();
            let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
            assert_eq!(
                seqs,
                (1..=last).collect::<Vec<_>>(),
                "conv {c}: contiguous from 1"
            );
            let keys: BTreeSet<_> = msgs
                .iter()
                .filter(|m| !m.client_msg_id.is_empty())
                .map(|m| (c, m.sender, m.client_msg_id.clone()))
                .collect();
            let sent: BTreeSet<_> = answers.keys().filter(|k| k.0 == c).cloned().collect();
            let stored_with_id = msgs.iter().filter(|m| !m.client_msg_id.is_empty()).count();
            assert_eq!(stored_with_id, keys.len(), "conv {c}: no key stored twice");
            assert_eq!(keys, sent, "conv {c}: every key stored");
            for m in &msgs {
                if let Some(v) = answers.get(&(c, m.sender, m.client_msg_id.clone())) {
                    assert_eq!(v[0].message.seq, m.seq);
                }
            }
        }
    });
}

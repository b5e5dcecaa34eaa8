//! Two logic nodes (two `PgStore`s, two pools) append to one conversation at once, each
//! `client_msg_id` sent by both (reference im.md §9, unit level): the conversation row lock
//! orders them, dedup under it answers the second sender with the first one's seq.

use super::{fresh_db, open_on};
use crate::store::contract::text;
use crate::store::{Appended, Conv, ImStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Barrier;

const IDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_on_one_conversation_leave_no_hole_and_no_double() {
    let url = fresh_db();
    let a = Arc::new(open_on(&url).await.0);
    let b = Arc::new(open_on(&url).await.0);
    // The conversation does not exist yet: the first appends also race to create it.
    let c = Conv::p2p(1, 2);
    let mut tasks = Vec::new();
    for i in 0..IDS {
        // Both nodes send id i at the same moment (the barrier), from the same sender.
        let gate = Arc::new(Barrier::new(2));
        let sender = [1, 2][i % 2];
        for store in [a.clone(), b.clone()] {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let req = text(c, sender, &format!("id{i}"), &format!("body {i}"));
                gate.wait().await;
                (i, store.append(req).await.unwrap())
            }));
        }
    }
    let mut by_id: BTreeMap<usize, Vec<Appended>> = BTreeMap::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        by_id.entry(i).or_default().push(r);
    }
    for (i, rs) in &by_id {
        assert_eq!(rs.len(), 2);
        assert_eq!(
            (rs[0].message.seq, rs[0].message.msg_id),
            (rs[1].message.seq, rs[1].message.msg_id),
            "id{i}: both callers get the same seq and msg_id"
        );
        assert_eq!(
            rs.iter().filter(|r| !r.duplicate).count(),
            1,
            "id{i}: stored by exactly one caller"
        );
    }
    let head = a.conversation(c).await.unwrap().unwrap();
    assert_eq!(head.last_seq, IDS as u64, "one seq per id");
    let msgs = b.range(c, 1, u64::MAX, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=IDS as u64).collect::<Vec<_>>(),
        "no hole, no double"
    );
    let mut ids: Vec<&str> = msgs.iter().map(|m| m.client_msg_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), IDS, "one row per (sender, client_msg_id)");
    for m in &msgs {
        let i: usize = m.client_msg_id[2..].parse().unwrap();
        assert_eq!(by_id[&i][0].message.seq, m.seq);
    }
}

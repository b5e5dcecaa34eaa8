//! A throughput probe, not a benchmark with a bound: N appends spread over 1,000 P2P
//! conversations from `k` concurrent callers (the batch size follows `k`, up to `batch_max`),
//! durability Sync, printing msg/s. Run with
//! `cargo test -p starling-im --release -- --ignored --nocapture throughput`.

use super::{T, text};
use crate::store::*;
use std::sync::Arc;
use std::time::Instant;

#[test]
#[ignore = "a measurement: prints msg/s, asserts nothing about speed"]
fn throughput_over_1000_conversations() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (callers, n) in [
        (1usize, 500usize),
        (16, 4_000),
        (128, 20_000),
        (512, 50_000),
    ] {
        let t = Arc::new(T::open(Durability::Sync));
        let started = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for k in 0..callers {
                let t = t.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = k;
                    while i < n {
                        let peer = 2 + (i % 1000) as i64;
                        let body = "x".repeat(200);
                        t.store
                            .append(text(Conv::p2p(1, peer), 1, &format!("m{i}"), &body))
                            .await
                            .unwrap();
                        i += callers;
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{callers:>4} callers: {n:>6} appends in {secs:.2} s = {:>8.0} msg/s",
            n as f64 / secs
        );
    }
}

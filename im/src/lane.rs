//! Lanes: the writes of one conversation, in order, with their deliveries (reference im.md
//! §7.1 step 2). A lane has at most one batch in flight: whatever queued meanwhile is written
//! as the next batch (the writes are handed to the store in queue order, and the embedded
//! writer commits them in one fsync), then delivered as one push per comet, then answered.
//! So a conversation's deliveries leave in seq order, and a burst leaves as one batch.

use crate::deliver::{Delivery, DeliveryError};
use crate::store::{BoxFuture, Conv, StoreResult, StoredMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What runs once a write's batch was handed to delivery.
pub type OnDelivered = Box<dyn FnOnce() + Send>;

/// A write's result: what it stored (to deliver) and what its caller gets back.
pub struct Written<T> {
    /// Messages to push (new, or the original of a duplicate: a retry re-publishes it).
    pub deliver: Vec<StoredMessage>,
    pub reply: T,
    /// Run once the batch was handed to delivery, before any of its callers is answered and
    /// so before the lane's next batch starts (a send keeps its ack in the recent acks there,
    /// where its own retry, queued behind it, finds it). Not run when delivery failed.
    pub delivered: Option<OnDelivered>,
}

/// What a lane answers: the store's result, and whether delivery was handed over.
pub struct Landed<T> {
    pub result: StoreResult<T>,
    pub delivered: Result<(), DeliveryError>,
}

type Run = Box<
    dyn FnOnce() -> BoxFuture<'static, StoreResult<Written<Box<dyn std::any::Any + Send>>>> + Send,
>;

struct Item {
    run: Run,
    /// The sending connection's key: its own messages are not pushed back to it.
    own_key: Option<String>,
    done: oneshot::Sender<Landed<Box<dyn std::any::Any + Send>>>,
}

pub struct Lanes {
    queues: Mutex<HashMap<Conv, VecDeque<Item>>>,
    delivery: Arc<Delivery>,
    /// Writes dropped unstarted because their caller had gone (see [`Lanes::abandoned`]).
    abandoned: AtomicU64,
}

impl Lanes {
    pub fn new(delivery: Arc<Delivery>) -> Arc<Lanes> {
        Arc::new(Lanes {
            queues: Mutex::default(),
            delivery,
            abandoned: AtomicU64::new(0),
        })
    }

    /// Queues `write` on `conv`'s lane and waits for it to be stored and delivered. `write`
    /// is called (and its future polled first) in queue order.
    pub async fn write<T, F>(
        self: &Arc<Self>,
        conv: Conv,
        own_key: Option<String>,
        write: F,
    ) -> Landed<T>
    where
        T: Send + 'static,
        F: FnOnce() -> BoxFuture<'static, StoreResult<Written<T>>> + Send + 'static,
    {
        let run: Run = Box::new(move || {
            let fut = write();
            Box::pin(async move {
                fut.await.map(|w| Written {
                    deliver: w.deliver,
                    reply: Box::new(w.reply) as Box<dyn std::any::Any + Send>,
                    delivered: w.delivered,
                })
            })
        });
        let (tx, rx) = oneshot::channel();
        let start = {
            // The lane's entry lives while its driver runs: the driver removes it, under this
            // lock, once it finds the queue empty. So a new entry means no driver.
            let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let start = !q.contains_key(&conv);
            q.entry(conv).or_default().push_back(Item {
                run,
                own_key,
                done: tx,
            });
            start
        };
        if start {
            tokio::spawn(self.clone().drive(conv));
        }
        match rx.await {
            Ok(l) => Landed {
                result: l
                    .result
                    .map(|b| *b.downcast::<T>().expect("lane reply type")),
                delivered: l.delivered,
            },
            Err(_) => Landed {
                result: Err(crate::store::StoreError::Unavailable("lane stopped".into())),
                delivered: Ok(()),
            },
        }
    }

    /// Writes never started because their caller had stopped waiting when the lane reached
    /// them: a request past its deadline (logic drops it at comet's `grpc-timeout`) or whose
    /// HTTP client went away. Nothing was stored or acknowledged for them; the client's retry
    /// of the same `client_msg_id` stores it. Under overload this is the work that would
    /// only have made every later answer late too.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Writes waiting on `conv`'s lane for the next batch (not counting the batch in flight).
    pub fn queued(&self, conv: Conv) -> usize {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        q.get(&conv).map_or(0, VecDeque::len)
    }

    async fn drive(self: Arc<Self>, conv: Conv) {
        loop {
            let batch: Vec<Item> = {
                let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                match q.get_mut(&conv) {
                    Some(lane) if !lane.is_empty() => lane.drain(..).collect(),
                    _ => {
                        q.remove(&conv);
                        return;
                    }
                }
            };
            self.run_batch(conv, batch).await;
        }
    }

    async fn run_batch(&self, conv: Conv, batch: Vec<Item>) {
        let mut dones = Vec::with_capacity(batch.len());
        let mut futs = Vec::with_capacity(batch.len());
        for item in batch {
            if item.done.is_closed() {
                self.abandoned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            futs.push((item.run)());
            dones.push((item.own_key, item.done));
        }
        if futs.is_empty() {
            return;
        }
        let mut results = futures_util::future::join_all(futs).await;
        let mut msgs: Vec<StoredMessage> = Vec::new();
        let mut own: HashMap<u64, String> = HashMap::new();
        for (r, (key, _)) in results.iter().zip(&dones) {
            if let Ok(w) = r {
                for m in &w.deliver {
                    if let Some(k) = key {
                        own.insert(m.seq, k.clone());
                    }
                    msgs.push(m.clone());
                }
            }
        }
        msgs.sort_by_key(|m| m.seq);
        msgs.dedup_by_key(|m| m.seq);
        let delivered = self.delivery.messages(conv, &msgs, &own).await;
        match &delivered {
            Ok(()) => {
                for w in results.iter_mut().flatten() {
                    if let Some(f) = w.delivered.take() {
                        f();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(?conv, error = %e, "delivery not handed over; the stored messages wait for sync");
            }
        }
        for (r, (_, done)) in results.into_iter().zip(dones) {
            let _ = done.send(Landed {
                result: r.map(|w| w.reply),
                delivered: delivered.clone(),
            });
        }
    }
}

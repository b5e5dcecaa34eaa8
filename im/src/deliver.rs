//! Delivery: committed messages and events to members' online devices, as goim key pushes
//! through job and the comets (reference im.md §7.1 step 4, §7.4). One `PushMsg` per comet
//! per distinct body: a body is encoded once per codec and viewer and shared by every key
//! that gets it. Pushes are hints; a lost one is healed by the client's gap pull or sync.

use crate::codec;
use crate::devices::{Device, DeviceError, DeviceTable};
use crate::store::{Conv, ImStore, MemberState, StoreError, StoredMessage};
use starling_logic::{PushError, PushSink};
use starling_proto::grpc::logic::{PushMsg, push_msg};
use starling_proto::im::v1::{ConvKind, ConvRef, Event, Kick, Push};
use starling_proto::op::{self, Codec};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DeliveryError {
    #[error(transparent)]
    Push(#[from] PushError),
    #[error("reading the members: {0}")]
    Members(#[from] StoreError),
    /// The members' devices could not be looked up (Redis down): nothing was pushed.
    #[error(transparent)]
    Devices(#[from] DeviceError),
}

pub struct Delivery {
    pub devices: Arc<DeviceTable>,
    sink: Arc<dyn PushSink>,
    store: Arc<dyn ImStore>,
}

/// Who may read which seqs of a conversation.
struct Reader {
    uid: i64,
    from: u64,
    to: u64,
}

impl Delivery {
    pub fn new(
        devices: Arc<DeviceTable>,
        sink: Arc<dyn PushSink>,
        store: Arc<dyn ImStore>,
    ) -> Self {
        Delivery {
            devices,
            sink,
            store,
        }
    }

    /// The members who may read some of `from..=to`, with their windows.
    async fn readers(&self, conv: Conv, from: u64, to: u64) -> Result<Vec<Reader>, StoreError> {
        match conv.kind {
            ConvKind::P2p => Ok(vec![
                Reader {
                    uid: conv.a,
                    from,
                    to,
                },
                Reader {
                    uid: conv.b,
                    from,
                    to,
                },
            ]),
            ConvKind::Notice => Ok(vec![Reader {
                uid: conv.a,
                from,
                to,
            }]),
            _ => {
                let members = self.store.members(conv, 0, usize::MAX, false).await?;
                Ok(members
                    .iter()
                    .filter_map(|m: &MemberState| {
                        let hi = if m.leave_seq == 0 {
                            to
                        } else {
                            m.leave_seq.min(to)
                        };
                        let lo = m.join_seq.max(from);
                        (lo <= hi).then_some(Reader {
                            uid: m.uid,
                            from: lo,
                            to: hi,
                        })
                    })
                    .collect())
            }
        }
    }

    /// Pushes `msgs` (one conversation, ascending seq) as op 41 to every online device of
    /// each member allowed to read them. A message is not pushed to the connection that sent
    /// it (`own`: its key per seq): its ack carries the seq.
    pub async fn messages(
        &self,
        conv: Conv,
        msgs: &[StoredMessage],
        own: &HashMap<u64, String>,
    ) -> Result<(), DeliveryError> {
        let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else {
            return Ok(());
        };
        let readers = self.readers(conv, first.seq, last.seq).await?;
        let windows: HashMap<i64, (u64, u64)> =
            readers.iter().map(|r| (r.uid, (r.from, r.to))).collect();
        let uids: Vec<i64> = readers.iter().map(|r| r.uid).collect();
        // (server, codec, viewer's conv, seqs) → keys; the body is built once per group.
        let mut groups: BTreeMap<(String, i32, i64, Vec<u64>), Vec<String>> = BTreeMap::new();
        self.devices
            .visit(&uids, |d| {
                let (lo, hi) = windows[&d.mid];
                let seqs: Vec<u64> = msgs
                    .iter()
                    .map(|m| m.seq)
                    .filter(|s| {
                        (lo..=hi).contains(s) && own.get(s).map(String::as_str) != Some(d.key)
                    })
                    .collect();
                if seqs.is_empty() {
                    return;
                }
                let view = conv.view(d.mid).id;
                groups
                    .entry((d.server.to_string(), d.codec as i32, view, seqs))
                    .or_default()
                    .push(d.key.to_string());
            })
            .await?;
        let by_seq: HashMap<u64, &StoredMessage> = msgs.iter().map(|m| (m.seq, m)).collect();
        for ((server, codec, view, seqs), keys) in groups {
            let conv_ref = ConvRef {
                kind: conv.kind as i32,
                id: view,
            };
            let push = Push {
                messages: seqs
                    .iter()
                    .map(|s| {
                        let mut m = by_seq[s].clone();
                        m.conv = Some(conv_ref);
                        m
                    })
                    .collect(),
            };
            let codec = Codec::from_im(codec).expect("devices hold a codec");
            self.publish(
                server,
                keys,
                op::im::MSG,
                codec::encode(codec, &push),
                conv.partition_key(),
            )
            .await?;
        }
        Ok(())
    }

    /// Pushes an event (op 43) to the devices of `uids` except the connection `except_key`;
    /// `make` builds it for each viewer (conversation references are viewer-relative).
    pub async fn event(
        &self,
        uids: &[i64],
        except_key: &str,
        partition_key: String,
        make: impl Fn(i64) -> Event,
    ) -> Result<(), DeliveryError> {
        let mut groups: BTreeMap<(String, i32, i64), Vec<String>> = BTreeMap::new();
        self.devices
            .visit(uids, |d| {
                if d.key != except_key {
                    groups
                        .entry((d.server.to_string(), d.codec as i32, d.mid))
                        .or_default()
                        .push(d.key.to_string());
                }
            })
            .await?;
        // One body per viewer and codec; viewers on one comet still get one PushMsg each.
        for ((server, codec, mid), keys) in groups {
            let codec = Codec::from_im(codec).expect("devices hold a codec");
            self.publish(
                server,
                keys,
                op::im::EVENT,
                codec::encode(codec, &make(mid)),
                partition_key.clone(),
            )
            .await?;
        }
        Ok(())
    }

    /// Sends `kick` (op 45) to one connection; comet closes it once written. `None` closes it
    /// without a packet (the same device reconnected elsewhere).
    pub async fn kick(&self, d: &Device, kick: Option<&Kick>) -> Result<(), PushError> {
        let body = kick.map(|k| codec::encode(d.codec, k)).unwrap_or_default();
        self.publish(
            d.server.clone(),
            vec![d.key.clone()],
            op::im::KICK,
            body,
            String::new(),
        )
        .await
    }

    async fn publish(
        &self,
        server: String,
        keys: Vec<String>,
        op: i32,
        msg: bytes::Bytes,
        partition_key: String,
    ) -> Result<(), PushError> {
        self.sink
            .publish(PushMsg {
                r#type: push_msg::Type::Push as i32,
                operation: op,
                server,
                keys,
                msg,
                partition_key,
                ..Default::default()
            })
            .await
    }
}

//! The writer's state between the database and a command: [`Committed`] caches what is on
//! disk; a [`Layer`] holds pending writes (one per batch, one per command on top of it); a
//! [`Tx`] reads through all of them, so a command sees the earlier commands of its batch.

use super::records::{ConvRec, DedupRec, GroupRec, MemberRec, decode};
use super::{Ks, Shared, keys, unavailable};
use crate::store::{Conv, ConvMeta, MemberState, StoreError, StoreResult, StoredMessage};
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};

/// The id counters: the next value to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    pub msg_id: u64,
    pub conv_id: u64,
    pub gid: i64,
}

/// What is on disk, cached.
pub(super) struct Committed {
    pub convs: HashMap<u64, ConvMeta>,
    pub conv_ids: HashMap<Conv, u64>,
    pub contact_ver: HashMap<i64, u64>,
    pub counters: Counters,
}

impl Committed {
    pub fn load(shared: &Shared) -> StoreResult<Committed> {
        let meta = shared.ks(Ks::Meta);
        let get = |k: &[u8]| -> StoreResult<u64> {
            Ok(meta
                .get(k)
                .map_err(unavailable)?
                .map_or(1, |v| keys::de_u(&v)))
        };
        Ok(Committed {
            convs: HashMap::new(),
            conv_ids: HashMap::new(),
            contact_ver: HashMap::new(),
            counters: Counters {
                msg_id: get(keys::META_NEXT_MSG_ID)?,
                conv_id: get(keys::META_NEXT_CONV_ID)?,
                gid: get(keys::META_NEXT_GID)? as i64,
            },
        })
    }
}

/// Pending writes: raw key-values plus the typed heads and counters (written once per batch).
#[derive(Default)]
pub(super) struct Layer {
    pub kv: BTreeMap<(Ks, Vec<u8>), Option<Vec<u8>>>,
    pub convs: HashMap<u64, ConvMeta>,
    pub conv_ids: HashMap<Conv, u64>,
    pub contact_ver: HashMap<i64, u64>,
    pub counters: Option<Counters>,
}

impl Layer {
    pub fn merge(&mut self, top: Layer) {
        self.kv.extend(top.kv);
        self.convs.extend(top.convs);
        self.conv_ids.extend(top.conv_ids);
        self.contact_ver.extend(top.contact_ver);
        if top.counters.is_some() {
            self.counters = top.counters;
        }
    }
}

/// One command's view: its own layer over the batch's, over the caches, over the database.
pub(super) struct Tx<'a> {
    pub shared: &'a Shared,
    pub committed: &'a mut Committed,
    pub batch: &'a Layer,
    pub cmd: Layer,
    /// The batch's clock, ms.
    pub now: i64,
}

impl Tx<'_> {
    pub fn get(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let k = (ks, key.to_vec());
        if let Some(v) = self.cmd.kv.get(&k).or_else(|| self.batch.kv.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self
            .shared
            .ks(ks)
            .get(key)
            .map_err(unavailable)?
            .map(|v| v.to_vec()))
    }

    pub fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) {
        self.cmd.kv.insert((ks, key), Some(value));
    }

    pub fn del(&mut self, ks: Ks, key: Vec<u8>) {
        self.cmd.kv.insert((ks, key), None);
    }

    /// Every pair under `prefix`, the database's with the pending writes applied.
    pub fn scan_prefix(&self, ks: Ks, prefix: &[u8]) -> StoreResult<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for g in self.shared.ks(ks).prefix(prefix) {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            out.insert(k.to_vec(), v.to_vec());
        }
        for layer in [self.batch, &self.cmd] {
            for ((_, k), v) in layer
                .kv
                .range((ks, prefix.to_vec())..)
                .take_while(|((s, k), _)| *s == ks && k.starts_with(prefix))
            {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    pub fn counters(&self) -> Counters {
        self.cmd
            .counters
            .or(self.batch.counters)
            .unwrap_or(self.committed.counters)
    }

    pub fn set_counters(&mut self, c: Counters) {
        self.cmd.counters = Some(c);
    }

    pub fn conv_id(&mut self, conv: Conv) -> StoreResult<Option<u64>> {
        if let Some(id) = self
            .cmd
            .conv_ids
            .get(&conv)
            .or_else(|| self.batch.conv_ids.get(&conv))
        {
            return Ok(Some(*id));
        }
        if let Some(id) = self.committed.conv_ids.get(&conv) {
            return Ok(Some(*id));
        }
        let id = self
            .shared
            .ks(Ks::ConvKey)
            .get(keys::conv_key(conv))
            .map_err(unavailable)?
            .map(|v| keys::de_u(&v));
        if let Some(id) = id {
            self.committed.conv_ids.insert(conv, id);
        }
        Ok(id)
    }

    /// The head of an existing conversation.
    pub fn head(&mut self, conv_id: u64) -> StoreResult<ConvMeta> {
        if let Some(m) = self
            .cmd
            .convs
            .get(&conv_id)
            .or_else(|| self.batch.convs.get(&conv_id))
        {
            return Ok(m.clone());
        }
        if let Some(m) = self.committed.convs.get(&conv_id) {
            return Ok(m.clone());
        }
        let v = self
            .shared
            .ks(Ks::Conv)
            .get(keys::conv(conv_id))
            .map_err(unavailable)?
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "damaged store: conversation {conv_id} has an id but no head"
                ))
            })?;
        let m = decode::<ConvRec>("conv", &v)?.into_meta(conv_id);
        self.committed.convs.insert(conv_id, m.clone());
        Ok(m)
    }

    pub fn set_head(&mut self, m: ConvMeta) {
        self.cmd.convs.insert(m.conv_id, m);
    }

    /// Creates a conversation with no messages and no members.
    pub fn create_conv(&mut self, conv: Conv) -> ConvMeta {
        let mut c = self.counters();
        let conv_id = c.conv_id;
        c.conv_id += 1;
        self.set_counters(c);
        let m = ConvMeta {
            conv_id,
            conv,
            last_seq: 0,
            last_msg_ts: 0,
            min_seq: 1,
            member_version: 0,
            created_ts: self.now,
        };
        self.cmd.conv_ids.insert(conv, conv_id);
        self.set_head(m.clone());
        m
    }

    pub fn member(&self, conv_id: u64, uid: i64) -> StoreResult<Option<MemberState>> {
        self.get(Ks::Member, &keys::member(conv_id, uid))?
            .map(|v| decode::<MemberRec>("member", &v).map(MemberRec::into_state))
            .transpose()
    }

    /// Writes a membership under both of its keys.
    pub fn put_member(&mut self, conv_id: u64, m: &MemberState) {
        let v = MemberRec::from_state(m).encode_to_vec();
        self.put(Ks::Member, keys::member(conv_id, m.uid), v.clone());
        self.put(Ks::UserConv, keys::user_conv(m.uid, conv_id), v);
    }

    pub fn group(&self, gid: i64) -> StoreResult<Option<GroupRec>> {
        self.get(Ks::Group, &keys::id(gid))?
            .map(|v| decode::<GroupRec>("group", &v))
            .transpose()
    }

    pub fn put_group(&mut self, gid: i64, g: &GroupRec) {
        self.put(Ks::Group, keys::id(gid), g.encode_to_vec());
    }

    pub fn message(&self, conv_id: u64, seq: u64) -> StoreResult<Option<StoredMessage>> {
        self.get(Ks::Msg, &keys::msg(conv_id, seq))?
            .map(|v| decode::<StoredMessage>("msg", &v))
            .transpose()
    }

    pub fn put_message(&mut self, conv_id: u64, m: &StoredMessage) {
        self.put(Ks::Msg, keys::msg(conv_id, m.seq), m.encode_to_vec());
    }

    pub fn dedup(
        &self,
        conv_id: u64,
        sender: i64,
        client_msg_id: &str,
    ) -> StoreResult<Option<DedupRec>> {
        self.get(Ks::Dedup, &keys::dedup(conv_id, sender, client_msg_id))?
            .map(|v| decode::<DedupRec>("dedup", &v))
            .transpose()
    }

    /// The owner's contact version (0 = never changed).
    pub fn contact_version(&mut self, owner: i64) -> StoreResult<u64> {
        if let Some(v) = self
            .cmd
            .contact_ver
            .get(&owner)
            .or_else(|| self.batch.contact_ver.get(&owner))
        {
            return Ok(*v);
        }
        if let Some(v) = self.committed.contact_ver.get(&owner) {
            return Ok(*v);
        }
        // The newest change of each peer is kept, so the owner's newest is the last key.
        let v = match self
            .shared
            .ks(Ks::ContactVer)
            .prefix(keys::prefix_i(owner))
            .next_back()
        {
            Some(g) => keys::de_u(&g.key().map_err(unavailable)?[8..]),
            None => 0,
        };
        self.committed.contact_ver.insert(owner, v);
        Ok(v)
    }
}

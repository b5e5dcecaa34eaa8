//! Reads, each on one fjall snapshot: a write batch is seen whole or not at all.

use super::records::{ContactRec, ConvRec, GroupRec, MemberRec, UserRec, decode};
use super::{Ks, Shared, keys, unavailable};
use crate::store::{Contact, Conv, ConvMeta, Group, MemberState, StoreResult, StoredMessage, User};
use fjall::{Readable, Snapshot};
use starling_proto::im::v1::MsgKind;

/// A snapshot and the keyspaces to read it through.
pub(super) struct Reader<'a> {
    shared: &'a Shared,
    snap: Snapshot,
}

impl<'a> Reader<'a> {
    pub fn new(shared: &'a Shared) -> Reader<'a> {
        Reader {
            shared,
            snap: shared.db.snapshot(),
        }
    }

    fn get(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<fjall::Slice>> {
        self.snap.get(self.shared.ks(ks), key).map_err(unavailable)
    }

    /// The key-value pairs of `ks` with `lo <= key <= hi`, ascending or descending.
    fn scan(
        &self,
        ks: Ks,
        lo: Vec<u8>,
        hi: Vec<u8>,
        rev: bool,
    ) -> impl Iterator<Item = StoreResult<(fjall::Slice, fjall::Slice)>> + '_ {
        let it = self.snap.range(self.shared.ks(ks), lo..=hi);
        let it: Box<dyn Iterator<Item = fjall::Guard>> = if rev {
            Box::new(it.rev())
        } else {
            Box::new(it)
        };
        it.map(|g| g.into_inner().map_err(unavailable))
    }

    fn prefix(
        &self,
        ks: Ks,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = StoreResult<(fjall::Slice, fjall::Slice)>> + '_ {
        self.snap
            .prefix(self.shared.ks(ks), prefix)
            .map(|g| g.into_inner().map_err(unavailable))
    }

    pub fn conv_id(&self, conv: Conv) -> StoreResult<Option<u64>> {
        Ok(self
            .get(Ks::ConvKey, &keys::conv_key(conv))?
            .map(|v| keys::de_u(&v)))
    }

    pub fn head_by_id(&self, conv_id: u64) -> StoreResult<Option<ConvMeta>> {
        self.get(Ks::Conv, &keys::conv(conv_id))?
            .map(|v| decode::<ConvRec>("conv", &v).map(|r| r.into_meta(conv_id)))
            .transpose()
    }

    pub fn head(&self, conv: Conv) -> StoreResult<Option<ConvMeta>> {
        match self.conv_id(conv)? {
            Some(id) => self.head_by_id(id),
            None => Ok(None),
        }
    }

    pub fn user(&self, uid: i64) -> StoreResult<Option<User>> {
        self.get(Ks::User, &keys::id(uid))?
            .map(|v| decode::<UserRec>("user", &v).map(|r| r.into_user(uid)))
            .transpose()
    }

    pub fn contact(&self, owner: i64, peer: i64) -> StoreResult<Option<Contact>> {
        self.get(Ks::Contact, &keys::contact(owner, peer))?
            .map(|v| decode::<ContactRec>("contact", &v).map(|r| r.into_contact(owner, peer)))
            .transpose()
    }

    pub fn contacts(
        &self,
        owner: i64,
        since_version: u64,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let mut out = Vec::new();
        if limit == 0 || since_version == u64::MAX {
            return Ok(out);
        }
        let lo = keys::contact_ver(owner, since_version + 1);
        let hi = keys::contact_ver(owner, u64::MAX);
        for kv in self.scan(Ks::ContactVer, lo, hi, false) {
            let (_, peer) = kv?;
            if let Some(c) = self.contact(owner, keys::de_i(&peer))? {
                out.push(c);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn group(&self, gid: i64) -> StoreResult<Option<Group>> {
        self.get(Ks::Group, &keys::id(gid))?
            .map(|v| decode::<GroupRec>("group", &v).map(|r| r.into_group(gid)))
            .transpose()
    }

    pub fn member(&self, conv: Conv, uid: i64) -> StoreResult<Option<MemberState>> {
        let Some(id) = self.conv_id(conv)? else {
            return Ok(None);
        };
        self.get(Ks::Member, &keys::member(id, uid))?
            .map(|v| decode::<MemberRec>("member", &v).map(MemberRec::into_state))
            .transpose()
    }

    pub fn members(
        &self,
        conv: Conv,
        after_uid: i64,
        limit: usize,
        current_only: bool,
    ) -> StoreResult<Vec<MemberState>> {
        let mut out = Vec::new();
        let Some(id) = self.conv_id(conv)? else {
            return Ok(out);
        };
        if limit == 0 || after_uid == i64::MAX {
            return Ok(out);
        }
        for kv in self.scan(
            Ks::Member,
            keys::member(id, after_uid + 1),
            keys::member(id, i64::MAX),
            false,
        ) {
            let (_, v) = kv?;
            let m = decode::<MemberRec>("member", &v)?.into_state();
            if current_only && !m.is_current() {
                continue;
            }
            out.push(m);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Messages `from..=to` (clamped to the retention floor), at most `limit`, newest first when
    /// `rev`.
    pub fn range(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
        rev: bool,
    ) -> StoreResult<Vec<StoredMessage>> {
        let mut out = Vec::new();
        let Some(head) = self.head(conv)? else {
            return Ok(out);
        };
        let from = from.max(head.min_seq).max(1);
        if limit == 0 || from > to {
            return Ok(out);
        }
        for kv in self.scan(
            Ks::Msg,
            keys::msg(head.conv_id, from),
            keys::msg(head.conv_id, to),
            rev,
        ) {
            out.push(decode::<StoredMessage>("msg", &kv?.1)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn unread(
        &self,
        conv: Conv,
        viewer: i64,
        after: u64,
        to: u64,
        cap: u32,
    ) -> StoreResult<u32> {
        let Some(head) = self.head(conv)? else {
            return Ok(0);
        };
        let from = after.saturating_add(1).max(head.min_seq).max(1);
        let mut n = 0;
        if cap == 0 || from > to {
            return Ok(0);
        }
        for kv in self.scan(
            Ks::Msg,
            keys::msg(head.conv_id, from),
            keys::msg(head.conv_id, to),
            false,
        ) {
            let m = decode::<StoredMessage>("msg", &kv?.1)?;
            if m.kind == MsgKind::Normal as i32 && !m.recalled && m.sender != viewer {
                n += 1;
                if n >= cap {
                    break;
                }
            }
        }
        Ok(n)
    }

    pub fn last_visible(
        &self,
        conv: Conv,
        floor: u64,
        to: u64,
    ) -> StoreResult<Option<StoredMessage>> {
        let Some(head) = self.head(conv)? else {
            return Ok(None);
        };
        let from = floor.max(head.min_seq).max(1);
        if from > to {
            return Ok(None);
        }
        for kv in self.scan(
            Ks::Msg,
            keys::msg(head.conv_id, from),
            keys::msg(head.conv_id, to),
            true,
        ) {
            let m = decode::<StoredMessage>("msg", &kv?.1)?;
            if m.kind != MsgKind::Recall as i32 {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    pub fn directory(
        &self,
        uid: i64,
        since_ms: i64,
        after_conv_id: u64,
        limit: usize,
    ) -> StoreResult<Vec<(ConvMeta, MemberState)>> {
        let mut out = Vec::new();
        if limit == 0 || after_conv_id == u64::MAX {
            return Ok(out);
        }
        let lo = keys::user_conv(uid, after_conv_id + 1);
        let hi = keys::user_conv(uid, u64::MAX);
        for kv in self.scan(Ks::UserConv, lo, hi, false) {
            let (k, v) = kv?;
            let m = decode::<MemberRec>("user_conv", &v)?.into_state();
            let conv_id = keys::de_u(&k[8..]);
            let Some(head) = self.head_by_id(conv_id)? else {
                continue;
            };
            if m.updated_ts >= since_ms || head.last_msg_ts >= since_ms {
                out.push((head, m));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every key-value pair of `ks` under `prefix` (tests and the writer's dissolve).
    #[allow(dead_code)]
    pub fn all(&self, ks: Ks, prefix: Vec<u8>) -> StoreResult<Vec<(fjall::Slice, fjall::Slice)>> {
        self.prefix(ks, prefix).collect()
    }
}

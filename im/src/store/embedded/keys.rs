//! Key layouts of the keyspaces (reference im.md §6.2). Every integer is big-endian so that a
//! prefix or range scan walks in numeric order; signed integers have their sign bit flipped
//! first, so a negative id sorts before a positive one.

use crate::store::Conv;

/// The keyspaces, in the order [`super::Shared`] holds them.
pub(super) const KEYSPACES: [&str; 11] = [
    "msg",
    "dedup",
    "conv",
    "conv_key",
    "member",
    "user_conv",
    "contact",
    "contact_ver",
    "group",
    "user",
    "meta",
];

pub(super) const META_EPOCH: &[u8] = b"epoch";
pub(super) const META_SCHEMA: &[u8] = b"schema";
pub(super) const META_NEXT_CONV_ID: &[u8] = b"next_conv_id";
pub(super) const META_NEXT_MSG_ID: &[u8] = b"next_msg_id";
pub(super) const META_NEXT_GID: &[u8] = b"next_gid";
/// The layout version written with a fresh store.
pub(super) const SCHEMA: u64 = 1;

fn i(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn u(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes an `i64` written by [`i`].
pub(super) fn de_i(b: &[u8]) -> i64 {
    (de_u(b) ^ (1 << 63)) as i64
}

/// Decodes a big-endian `u64` from the first 8 bytes (0 if shorter: never written so).
pub(super) fn de_u(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_be_bytes)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `msg`: `conv_id ++ seq`.
pub(super) fn msg(conv_id: u64, seq: u64) -> Vec<u8> {
    cat(&[&u(conv_id), &u(seq)])
}

/// `dedup`: `conv_id ++ sender ++ client_msg_id`.
pub(super) fn dedup(conv_id: u64, sender: i64, client_msg_id: &str) -> Vec<u8> {
    cat(&[&u(conv_id), &i(sender), client_msg_id.as_bytes()])
}

/// `conv`: `conv_id`.
pub(super) fn conv(conv_id: u64) -> Vec<u8> {
    u(conv_id).to_vec()
}

/// `conv_key`: `kind u8 ++ a ++ b`.
pub(super) fn conv_key(c: Conv) -> Vec<u8> {
    cat(&[&[c.kind as i32 as u8], &i(c.a), &i(c.b)])
}

/// `member`: `conv_id ++ uid`.
pub(super) fn member(conv_id: u64, uid: i64) -> Vec<u8> {
    cat(&[&u(conv_id), &i(uid)])
}

/// `user_conv`: `uid ++ conv_id`.
pub(super) fn user_conv(uid: i64, conv_id: u64) -> Vec<u8> {
    cat(&[&i(uid), &u(conv_id)])
}

/// `contact`: `owner ++ peer`.
pub(super) fn contact(owner: i64, peer: i64) -> Vec<u8> {
    cat(&[&i(owner), &i(peer)])
}

/// `contact_ver`: `owner ++ version` → peer: the owner's changes in version order (one entry
/// per peer, its latest change).
pub(super) fn contact_ver(owner: i64, version: u64) -> Vec<u8> {
    cat(&[&i(owner), &u(version)])
}

/// `group` / `user`: `gid` / `uid`.
pub(super) fn id(v: i64) -> Vec<u8> {
    i(v).to_vec()
}

/// The 8-byte prefix of a key that starts with an `i64`.
pub(super) fn prefix_i(v: i64) -> Vec<u8> {
    i(v).to_vec()
}

/// The 8-byte prefix of a key that starts with a `u64`.
pub(super) fn prefix_u(v: u64) -> Vec<u8> {
    u(v).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_keys_sort_numerically() {
        let mut v = [-5i64, 3, i64::MIN, 0, i64::MAX, -1];
        let mut keys: Vec<_> = v.iter().map(|&x| id(x)).collect();
        keys.sort();
        v.sort();
        assert_eq!(keys.iter().map(|k| de_i(k)).collect::<Vec<_>>(), v);
        assert!(msg(1, 255) < msg(1, 256) && msg(1, u64::MAX) < msg(2, 0));
    }
}

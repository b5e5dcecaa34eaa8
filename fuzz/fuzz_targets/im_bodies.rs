//! The IM request bodies, in both codecs a connection may choose (protobuf, proto3 JSON),
//! through the codec logic's IM layer decodes client requests with
//! (`starling_im::codec::decode`, called by `im/src/ops.rs` for each request op).
//!
//! Input: byte 0 picks the codec (bit 0: JSON) and the request op (bits 1-3: send 20,
//! sync 22, pull 24, recall 26, read 28, recv 30, typing 32, members 34, each decoded as the
//! type `ops.rs` decodes it as); the rest is the body. Checked: a body that decodes
//! re-encodes (`codec::encode`, the reply path) and decodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use starling_im::codec;
use starling_proto::im::v1::{
    MarkReq, MembersReq, PullReq, RecallReq, SendReq, SyncReq, TypingReq,
};
use starling_proto::op::Codec;
use std::fmt::Debug;

fn round_trip<T>(c: Codec, body: &[u8])
where
    T: Message + Default + DeserializeOwned + Serialize + PartialEq + Debug,
{
    let Ok(req) = codec::decode::<T>(c, body) else {
        return;
    };
    let again = codec::encode(c, &req);
    assert_eq!(codec::decode::<T>(c, &again).as_ref(), Ok(&req));
}

fuzz_target!(|data: &[u8]| {
    let [mode, body @ ..] = data else {
        return;
    };
    let c = if mode & 1 == 1 {
        Codec::Json
    } else {
        Codec::Protobuf
    };
    match (mode >> 1) & 7 {
        0 => round_trip::<SendReq>(c, body),
        1 => round_trip::<SyncReq>(c, body),
        2 => round_trip::<PullReq>(c, body),
        3 => round_trip::<RecallReq>(c, body),
        4 | 5 => round_trip::<MarkReq>(c, body),
        6 => round_trip::<TypingReq>(c, body),
        _ => round_trip::<MembersReq>(c, body),
    }
});

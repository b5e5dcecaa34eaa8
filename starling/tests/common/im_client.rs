//! The acceptance tests' IM client (reference im.md §9): `starling-client`'s blocking client,
//! which implements the client contract of §5.4 — send with retry under the same
//! `client_msg_id`, a `contig` mark per conversation with gap wait and pull, directory sync
//! after every connect with pushes held meanwhile — and counts raw deliveries (duplicates
//! included) apart from visible ones (after dedup by `(conv, seq)`). This wrapper only turns
//! the crate's errors into test failures.
#![allow(dead_code)]

pub use starling_client::blocking::Login;
use starling_proto::im::v1::{ConvKind, ConvRef, SendAck};
use std::ops::{Deref, DerefMut};

pub struct ImClient(pub starling_client::blocking::ImClient);

impl Deref for ImClient {
    type Target = starling_client::blocking::ImClient;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ImClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl ImClient {
    pub fn connect(login: Login) -> Result<ImClient, String> {
        starling_client::blocking::ImClient::connect(login).map(ImClient)
    }

    /// Decodes a body in this client's codec; an undecodable body fails the test.
    pub fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(&self, b: &[u8]) -> T {
        self.0
            .decode(b)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
    }

    /// Sends until a final answer (§5.4 step 1); no final answer within 60 s fails the test.
    pub fn send(&mut self, conv: ConvRef, id: &str, content: &str) -> Vec<SendAck> {
        self.0
            .send(conv, id, content)
            .unwrap_or_else(|acks| panic!("no final answer to {id} in 60 s: {acks:?}"))
    }
}

pub fn p2p(peer: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    }
}

pub fn group(gid: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::Group as i32,
        id: gid,
    }
}

//! goim's client ops (`api/protocol/operation.go`): the op-7 auth body with Starling's IM
//! opt-in (reference im.md §5.1), and the bodies of room change (op 12) and accept filters
//! (ops 14/16).

use crate::codec::{Codec, token_name};
use starling_proto::AuthToken;

/// Who connects, and how (the fields of goim's JSON token plus the IM opt-in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Member (user) id; 0 is anonymous.
    pub mid: i64,
    /// Device key: stable per device, so the multi-device policy (im.md §7.6) replaces the
    /// same device silently. Empty asks logic for one.
    pub key: String,
    /// `ios`, `android`, `web`, …
    pub platform: String,
    /// Room joined at connect, `type://id`; empty joins none.
    pub room_id: String,
    /// Push ops accepted for key, mid and broadcast pushes (goim `accepts`).
    pub accepts: Vec<i32>,
    /// The IM body codec; `None` is a goim-only connection.
    pub im: Option<Codec>,
    /// The HS256 JWT proving `mid` (`POST /im/v1/tokens`); empty only against a server with
    /// `im.insecure_trust_mid`.
    pub im_token: String,
}

impl Identity {
    /// The op-7 body.
    pub fn auth_body(&self) -> Vec<u8> {
        AuthToken {
            mid: self.mid,
            key: self.key.clone(),
            room_id: self.room_id.clone(),
            platform: self.platform.clone(),
            accepts: self.accepts.clone(),
            im: self.im.map(token_name).unwrap_or_default().into(),
            im_token: self.im_token.clone(),
        }
        .to_json()
    }
}

/// The op-14/16 body: goim's comma-separated op list.
pub fn op_list(ops: &[i32]) -> Vec<u8> {
    ops.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_body_is_goims_token_with_the_im_fields() {
        let id = Identity {
            mid: 123,
            key: "ios-5f2c".into(),
            platform: "ios".into(),
            accepts: vec![1000],
            im: Some(Codec::Protobuf),
            im_token: "jwt".into(),
            ..Default::default()
        };
        let back = AuthToken::parse(&id.auth_body()).unwrap();
        assert_eq!(
            (back.mid, back.im.as_str(), back.im_token.as_str()),
            (123, "pb", "jwt")
        );
        assert_eq!(back.accepts, vec![1000]);
        let plain = Identity::default().auth_body();
        assert!(
            !String::from_utf8(plain).unwrap().contains("im_token"),
            "goim-only: no IM fields"
        );
        assert_eq!(op_list(&[1000, 1001]), b"1000,1001");
        assert_eq!(
            starling_proto::op::parse_op_list(&op_list(&[7])),
            Some(vec![7])
        );
    }
}

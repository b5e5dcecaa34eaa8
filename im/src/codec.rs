//! IM bodies in the connection's codec (reference im.md §5.1, §5.3): protobuf, or the
//! canonical proto3 JSON mapping of the same schema. A body that does not decode is a
//! [`CodecError`], answered with code 400 and the connection kept.

use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use starling_proto::op::Codec;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("body is not a valid {kind}: {why}")]
    Undecodable { kind: &'static str, why: String },
}

/// Decodes a request body.
pub fn decode<T: Message + Default + DeserializeOwned>(
    codec: Codec,
    body: &[u8],
) -> Result<T, CodecError> {
    match codec {
        Codec::Protobuf => T::decode(body).map_err(|e| CodecError::Undecodable {
            kind: "protobuf message",
            why: e.to_string(),
        }),
        Codec::Json => {
            // An empty JSON body means "all defaults", as an empty protobuf body does.
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            serde_json::from_slice(body).map_err(|e| CodecError::Undecodable {
                kind: "JSON object",
                why: e.to_string(),
            })
        }
    }
}

/// Encodes a reply or push body.
pub fn encode<T: Message + Serialize>(codec: Codec, msg: &T) -> bytes::Bytes {
    match codec {
        Codec::Protobuf => msg.encode_to_vec().into(),
        Codec::Json => serde_json::to_vec(msg)
            .expect("IM messages serialise")
            .into(),
    }
}

/// `im` of goim's token: `"pb"` or `"json"`.
pub fn from_token(im: &str) -> Option<Codec> {
    match im {
        "pb" | "protobuf" => Some(Codec::Protobuf),
        "json" => Some(Codec::Json),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::im::v1::{MarkReq, Result as ImResult};

    #[test]
    fn bodies_round_trip_in_both_codecs_and_bad_ones_are_errors() {
        let r = ImResult {
            code: 429,
            reason: "slow down".into(),
            retry_after_ms: 50,
        };
        for c in [Codec::Protobuf, Codec::Json] {
            assert_eq!(decode::<ImResult>(c, &encode(c, &r)).unwrap(), r);
        }
        assert!(decode::<MarkReq>(Codec::Json, b"{not json").is_err());
        assert!(decode::<MarkReq>(Codec::Protobuf, &[0xff, 0xff]).is_err());
        assert_eq!(
            decode::<MarkReq>(Codec::Json, b"").unwrap(),
            MarkReq::default()
        );
        assert_eq!(from_token("json"), Some(Codec::Json));
        assert_eq!(from_token("xml"), None);
    }
}

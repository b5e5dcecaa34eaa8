//! IM bodies in the codec a connection chose at auth (reference im.md §5.1: `"im":"pb"` or
//! `"json"`, fixed for the connection): protobuf, or the proto3 JSON mapping (pbjson).

pub use starling_proto::op::Codec;
use thiserror::Error;

/// A body that does not decode as the expected message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("undecodable {codec:?} body: {reason}")]
pub struct DecodeError {
    pub codec: Codec,
    pub reason: String,
}

/// The auth token's `im` value for a codec.
pub fn token_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Protobuf => "pb",
        Codec::Json => "json",
    }
}

/// Encodes an IM message in `codec`.
pub fn encode<T: prost::Message + serde::Serialize>(codec: Codec, m: &T) -> Vec<u8> {
    match codec {
        Codec::Protobuf => m.encode_to_vec(),
        Codec::Json => serde_json::to_vec(m).expect("IM messages serialise"),
    }
}

/// Decodes an IM message from `codec`.
pub fn decode<T>(codec: Codec, body: &[u8]) -> Result<T, DecodeError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match codec {
        Codec::Protobuf => T::decode(body).map_err(|e| DecodeError {
            codec,
            reason: e.to_string(),
        }),
        Codec::Json => serde_json::from_slice(body).map_err(|e| DecodeError {
            codec,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::im::v1::SendAck;

    #[test]
    fn both_codecs_round_trip_and_refuse_garbage() {
        let ack = SendAck {
            code: 429,
            retry_after_ms: 30,
            ..Default::default()
        };
        for codec in [Codec::Protobuf, Codec::Json] {
            let back: SendAck = decode(codec, &encode(codec, &ack)).unwrap();
            assert_eq!(back, ack);
            assert!(decode::<SendAck>(codec, &[0xff, 0xff, 0xff]).is_err());
        }
    }
}

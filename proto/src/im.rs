//! Starling's IM bodies (`starling.im.v1`, `proto/starling/im/v1/im.proto`): prost types with
//! the canonical proto3 JSON mapping as serde impls (pbjson), and the op numbers of the IM
//! range. One schema, two codecs; which one a connection uses it chose at auth
//! ([`crate::op::Codec`]). Design: reference im.md §5.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/starling.im.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/starling.im.v1.serde.rs"));
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message as _;

    #[test]
    fn json_twin_uses_the_proto3_mapping() {
        let req = SendReq {
            client_msg_id: "7b1e".into(),
            conv: Some(ConvRef {
                kind: ConvKind::P2p as i32,
                id: 456,
            }),
            content_type: 1,
            content: r#"{"text":"hi"}"#.into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["clientMsgId"], "7b1e");
        assert_eq!(json["conv"]["kind"], "P2P");
        assert_eq!(
            json["conv"]["id"], "456",
            "64-bit integers travel as strings"
        );
        // Input takes numbers and strings for 64-bit integers, names for enums.
        let back: SendReq = serde_json::from_str(
            r#"{"clientMsgId":"7b1e","conv":{"kind":"P2P","id":456},"contentType":1,"content":"{\"text\":\"hi\"}"}"#,
        )
        .unwrap();
        assert_eq!(back, req);
        // And protobuf round-trips the same value.
        assert_eq!(
            SendReq::decode(req.encode_to_vec().as_slice()).unwrap(),
            req
        );
    }

    #[test]
    fn json_replies_carry_code_zero() {
        let ack = SendAck::default();
        let json = serde_json::to_value(&ack).unwrap();
        assert_eq!(json["code"], 0, "reference im.md §13.4");
    }
}

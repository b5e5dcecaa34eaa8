//! The browser contract of the IM ops (reference im.md §5.3, §13.4): one JSON golden file per
//! op's request and reply body in `tests/golden/`, in the canonical proto3 JSON mapping, and a
//! protobuf and JSON round trip of every message. A change to the schema that changes what a
//! browser sends or reads fails here; regenerate on purpose with `UPDATE_GOLDEN=1`.

use serde::{Serialize, de::DeserializeOwned};
use starling_proto::im::v1::*;
use std::fmt::Debug;
use std::path::PathBuf;

fn conv_p2p() -> Option<ConvRef> {
    Some(ConvRef {
        kind: ConvKind::P2p as i32,
        id: 9_007_199_254_740_993,
    }) // above 2^53
}

fn message() -> Message {
    Message {
        conv: conv_p2p(),
        seq: 42,
        msg_id: 1001,
        sender: 123,
        client_msg_id: "7b1e2c9e-1d2f-4a51-9c0b-6a1f0e7e3b11".into(),
        kind: MsgKind::Normal as i32,
        content_type: 1,
        content: r#"{"text":"hi"}"#.into(),
        server_ts: 1_796_000_000_000,
        ref_seq: 0,
        recalled: false,
        mentions: vec![456],
        sender_platform: "ios".into(),
    }
}

/// Checks `value` against `tests/golden/{name}.json` and round-trips it in both codecs.
fn golden<T>(name: &str, value: T)
where
    T: prost::Message + Serialize + DeserializeOwned + PartialEq + Debug + Default,
{
    let json = serde_json::to_string_pretty(&value).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(json, want, "{name}: the JSON mapping changed");
    let back: T = serde_json::from_str(&want).unwrap();
    assert_eq!(back, value, "{name}: JSON round trip");
    assert_eq!(
        T::decode(value.encode_to_vec().as_slice()).unwrap(),
        value,
        "{name}: protobuf round trip"
    );
}

#[test]
fn every_op_body_matches_its_golden_json() {
    golden(
        "20_send_req",
        SendReq {
            client_msg_id: "7b1e2c9e-1d2f-4a51-9c0b-6a1f0e7e3b11".into(),
            conv: conv_p2p(),
            content_type: 1,
            content: r#"{"text":"hi"}"#.into(),
            mentions: vec![456],
            ref_seq: 0,
        },
    );
    golden(
        "21_send_ack",
        SendAck {
            code: 0,
            client_msg_id: "7b1e2c9e-1d2f-4a51-9c0b-6a1f0e7e3b11".into(),
            conv: conv_p2p(),
            seq: 42,
            msg_id: 1001,
            server_ts: 1_796_000_000_000,
            duplicate: false,
            stored: true,
            retry_after_ms: 0,
            reason: String::new(),
        },
    );
    golden(
        "22_sync_req",
        SyncReq {
            since: 1_796_000_000_000,
            cursor: "17".into(),
            limit: 100,
            epoch: 77,
        },
    );
    golden(
        "23_sync_reply",
        SyncReply {
            code: 0,
            convs: vec![ConvHead {
                conv: conv_p2p(),
                last_seq: 42,
                floor_seq: 1,
                read_seq: 40,
                peer_read_seq: 42,
                peer_recv_seq: 42,
                unread: 2,
                last: Some(message()),
                left: false,
                updated_ts: 1_796_000_000_000,
            }],
            has_more: true,
            cursor: "17".into(),
            server_ts: 1_795_999_990_000,
            epoch: 77,
            reset: false,
            gap_wait_ms: 1000,
            resync_ms: 300_000,
        },
    );
    golden(
        "24_pull_req",
        PullReq {
            conv: Some(ConvRef {
                kind: ConvKind::Group as i32,
                id: 7,
            }),
            dir: pull_req::Direction::Backward as i32,
            from_seq: 0,
            limit: 50,
        },
    );
    golden(
        "25_pull_reply",
        PullReply {
            code: 0,
            conv: conv_p2p(),
            messages: vec![message()],
            has_more: false,
            next_seq: 0,
            floor_seq: 1,
            last_seq: 42,
        },
    );
    golden(
        "26_recall_req",
        RecallReq {
            conv: conv_p2p(),
            seq: 42,
            client_msg_id: "r-1".into(),
        },
    );
    golden(
        "28_mark_req",
        MarkReq {
            conv: conv_p2p(),
            seq: 42,
        },
    );
    golden(
        "29_result",
        Result {
            code: 429,
            reason: "send rate exceeded".into(),
            retry_after_ms: 50,
        },
    );
    golden(
        "32_typing_req",
        TypingReq {
            conv: conv_p2p(),
            typing: true,
        },
    );
    golden(
        "34_members_req",
        MembersReq {
            gid: 7,
            cursor: String::new(),
            limit: 100,
        },
    );
    golden(
        "35_members_reply",
        MembersReply {
            code: 0,
            members: vec![Member {
                uid: 123,
                role: 2,
                read_seq: 40,
            }],
            cursor: "123".into(),
            has_more: true,
        },
    );
    golden(
        "41_push",
        Push {
            messages: vec![
                message(),
                Message {
                    seq: 43,
                    kind: MsgKind::Recall as i32,
                    ref_seq: 42,
                    content: String::new(),
                    mentions: vec![],
                    ..message()
                },
            ],
        },
    );
    golden(
        "43_event",
        Event {
            r#type: event::Type::Read as i32,
            conv: conv_p2p(),
            uid: 123,
            seq: 42,
            ts: 1_796_000_000_000,
            platform: "web".into(),
            typing: false,
        },
    );
    golden(
        "45_kick",
        Kick {
            code: 4001,
            reason: "logged in on another device".into(),
            by_platform: "ios".into(),
        },
    );
    golden(
        "8_im_welcome",
        ImWelcome {
            code: 0,
            epoch: 77,
            server_ts: 1_796_000_000_000,
            gap_wait_ms: 1000,
            resync_ms: 300_000,
            max_body: 16384,
        },
    );
}

#[test]
fn json_input_takes_numbers_or_strings_for_64_bit_ids_and_names_for_enums() {
    let a: SendReq =
        serde_json::from_str(r#"{"clientMsgId":"x","conv":{"kind":"GROUP","id":7}}"#).unwrap();
    let b: SendReq =
        serde_json::from_str(r#"{"clientMsgId":"x","conv":{"kind":"GROUP","id":"7"}}"#).unwrap();
    assert_eq!(a, b);
    // The proto field names are accepted too (proto3 JSON parsers must).
    let c: SendReq =
        serde_json::from_str(r#"{"client_msg_id":"x","conv":{"kind":2,"id":7}}"#).unwrap();
    assert_eq!(a, c);
    assert!(serde_json::from_str::<SendReq>(r#"{"conv":{"kind":"NOPE"}}"#).is_err());
}

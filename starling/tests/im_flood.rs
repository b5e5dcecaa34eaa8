//! Issue 15, IM floods on the all-in-one with real sockets: a client that keeps sending past
//! its rate gets 429 with `retry_after_ms`, then, one refusal too many within
//! `im.flood_window`, `IM_KICK` 4005 and the close. The same user's other device and another
//! user keep sending; every message acknowledged before the close is stored once.

mod common;

use common::im_client::p2p;
use common::im_server::*;
use starling_proto::im::v1::SendAck;
use starling_proto::op::{self, Codec};
use std::time::Duration;

#[test]
fn a_flooding_client_is_kicked_and_closed_others_are_not() {
    let im = Im::start_with(|c| {
        c.im.send_rate = 1;
        c.im.flood_refusals = 5;
        c.im.flood_window = Duration::from_secs(3600);
    });
    let mut flood = im.client(70, "flood", Codec::Protobuf);
    let mut calm = im.client(70, "calm", Codec::Json);
    let mut other = im.client(71, "other", Codec::Protobuf);
    let mut peer = im.client(72, "peer", Codec::Protobuf);

    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        let id = format!("f{i}");
        let sent: Result<SendAck, _> = flood.call(op::im::SEND, &send_req(p2p(72), &id, "x"));
        let Ok(ack) = sent else {
            break;
        };
        match ack.code {
            0 => acked.push(id),
            429 => {
                assert!(ack.retry_after_ms > 0, "{ack:?}");
                refused += 1;
            }
            _ => panic!("{ack:?}"),
        }
    }
    let closed = (0..200).any(|_| flood.pump(Duration::from_millis(20)).is_err());
    assert!(closed, "the flooding connection is closed");
    assert_eq!(flood.kicks.len(), 1, "one kick notice before the close");
    assert_eq!(flood.kicks[0].code, 4005);
    assert!(refused > 5, "{refused} refusals before the close");
    assert_eq!(acked.len(), 2, "the burst of send_rate 1");

    // The same user's other device and another user are not slowed: their own bursts pass.
    let sends = [calm.send(p2p(72), "c1", "x"), calm.send(p2p(72), "c2", "x")];
    for acks in sends.iter().chain([&other.send(p2p(72), "o1", "x")]) {
        assert_eq!(acks.last().map(|a| a.code), Some(0), "{acks:?}");
    }
    calm.pump(Duration::from_millis(100)).expect("calm stays");
    assert!(calm.kicks.is_empty() && other.kicks.is_empty());

    // Every acknowledged message of the flooder is stored once, in the peer's history.
    let (pages, _) = history(&mut peer, p2p(70), 100);
    let mut ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.messages.iter().map(|m| m.client_msg_id.clone()))
        .collect();
    ids.sort();
    let mut want = acked.clone();
    want.extend(["c1".to_string(), "c2".to_string()]);
    want.sort();
    assert_eq!(ids, want);
}

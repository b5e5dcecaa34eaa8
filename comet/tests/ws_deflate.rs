//! permessage-deflate (RFC 7692) on comet's WebSocket, against a scripted logic: negotiated
//! only when configured and offered, a malformed offer refused, pushes and logic's answers
//! compressed (small ones not), client messages inflated, and every bad compressed input
//! closed with a counted reason.

mod common;

use common::{Alone, Client, eventually, start, start_with, token};
use starling_comet::CloseReason;
use starling_proto::ws;
use std::sync::atomic::Ordering::Relaxed;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const AGREED: &str = "\r\nSec-WebSocket-Extensions: permessage-deflate; \
                      server_no_context_takeover; client_no_context_takeover\r\n";

fn start_deflate() -> Alone {
    let mut c = common::config();
    c.websocket.permessage_deflate = true;
    c.websocket.deflate_min_size = 64;
    start_with(c)
}

#[test]
fn deflate_is_agreed_only_when_configured_and_offered() {
    let c = start_deflate();
    let (_a, r) = Client::upgrade(c.ws, OFFER);
    assert!(r.starts_with("HTTP/1.1 101 ") && r.contains(AGREED), "{r}");
    let (_b, r) = Client::upgrade(c.ws, "");
    assert!(r.starts_with("HTTP/1.1 101 "), "{r}");
    assert!(!r.to_ascii_lowercase().contains("extensions"), "{r}");
    // An offer Starling cannot honour (a smaller server window) is declined, not refused;
    // the next acceptable offer in the list is taken (RFC 7692 §7.1).
    let small = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (_c, r) = Client::upgrade(c.ws, small);
    assert!(
        r.starts_with("HTTP/1.1 101 ") && !r.contains("Extensions"),
        "{r}"
    );
    let two = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n\
               Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n";
    let (_d, r) = Client::upgrade(c.ws, two);
    assert!(
        r.contains("client_no_context_takeover; server_max_window_bits=15\r\n"),
        "{r}"
    );
    assert_eq!(c.comet.stats().deflate.negotiated.load(Relaxed), 2);

    // Off (the default): the offer is not even read.
    let off = start();
    let (_e, r) = Client::upgrade(off.ws, OFFER);
    assert!(
        r.starts_with("HTTP/1.1 101 ") && !r.contains("Extensions"),
        "{r}"
    );
    assert_eq!(off.comet.stats().deflate.negotiated.load(Relaxed), 0);
}

#[test]
fn a_malformed_extensions_header_is_a_bad_upgrade() {
    let c = start_deflate();
    let bad = "Sec-WebSocket-Extensions: permessage-deflate; x=\"a b\"\r\n";
    let (mut client, r) = Client::upgrade(c.ws, bad);
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::BadUpgrade) == 1);
    // With deflate off the header is not read: goim's behaviour.
    let off = start();
    let (_client, r) = Client::upgrade(off.ws, bad);
    assert!(r.starts_with("HTTP/1.1 101 "), "{r}");
}

#[test]
fn pushes_and_answers_go_compressed_and_client_messages_are_inflated() {
    let c = start_deflate();
    let (mut a, _) = Client::upgrade(c.ws, OFFER);
    a.auth(&token(1, "ka", 1));
    let mut b = Client::connect_ws(c.ws);
    b.auth(&token(2, "kb", 1));
    let big = br#"{"conversation":{"kind":"group","id":7},"body":"hello"}"#.repeat(10);

    c.push_key("ka", 1000, &big);
    c.push_key("kb", 1000, &big);
    let (pa, pb) = (a.expect(), b.expect());
    assert_eq!(pa.body, pb.body, "the same push either way");
    assert!(pa.body.ends_with(&big));
    assert_eq!((a.compressed_frames, b.compressed_frames), (1, 0));
    // Under deflate_min_size: as it is.
    c.push_key("ka", 1000, b"short");
    assert!(a.expect().body.ends_with(b"short"));
    assert_eq!(a.compressed_frames, 1);

    // A compressed client message is inflated; logic's long answer comes back compressed.
    let long = "x".repeat(500);
    a.send_compressed(20, 5, long.as_bytes());
    let answer = a.expect();
    assert_eq!((answer.op, answer.seq), (21, 5));
    assert_eq!(answer.body, format!("re:{long}").into_bytes());
    assert_eq!(a.compressed_frames, 2);
    assert!(c.script.received_bodies().contains(&long));
    // A compressed heartbeat gets its short reply uncompressed.
    a.send_compressed(2, 6, b"");
    assert_eq!(a.expect().op, 3);
    assert_eq!(a.compressed_frames, 2);

    let d = &c.comet.stats().deflate;
    eventually("counted", || d.out_messages.load(Relaxed) == 2);
    assert_eq!(d.in_messages.load(Relaxed), 2);
    assert!(d.out_compressed.load(Relaxed) * 3 < d.out_raw.load(Relaxed));
    let metrics = starling_cluster::metrics::Metrics::new();
    c.comet.stats().register(&metrics);
    let text = metrics.render();
    assert!(
        text.contains("starling_comet_ws_deflate_messages_total{dir=\"out\"} 2\n"),
        "{text}"
    );
}

/// RFC 6455 §5.2: RSV1 is a protocol error on a connection that did not agree to an
/// extension defining it, whether comet is configured for deflate or not.
#[test]
fn rsv1_without_deflate_closes_as_bad_frame() {
    for c in [start(), start_deflate()] {
        let mut client = Client::connect_ws(c.ws);
        client.auth(&token(1, "k", 0));
        client.send_compressed(2, 1, b"");
        client.expect_close();
        eventually("counted", || c.closes(CloseReason::BadFrame) == 1);
    }
}

/// RFC 7692 §6.1: RSV1 on a control frame; and deflate data that does not inflate.
#[test]
fn rsv1_on_a_control_frame_and_bad_deflate_data_close_as_bad_frame() {
    let c = start_deflate();
    let (mut client, _) = Client::upgrade(c.ws, OFFER);
    client.auth(&token(1, "k", 0));
    client.write_raw(&ws::encode_client_frame_ext(
        ws::Opcode::Ping,
        true,
        true,
        [1, 2, 3, 4],
        b"",
    ));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::BadFrame) == 1);

    let (mut client, _) = Client::upgrade(c.ws, OFFER);
    client.auth(&token(2, "k2", 0));
    // BTYPE 11 is reserved (RFC 1951 §3.2.3).
    client.write_raw(&ws::encode_client_frame_ext(
        ws::Opcode::Binary,
        true,
        true,
        [1, 2, 3, 4],
        &[0xff; 8],
    ));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::BadFrame) == 2);
}

/// A few kilobytes that inflate to a megabyte: the inflater stops at the connection's limit
/// (goim's 4096-byte body before logic sets another) and the connection closes as
/// `frame_too_large`, as an uncompressed message over the limit does.
#[test]
fn a_decompression_bomb_closes_as_frame_too_large() {
    let c = start_deflate();
    let (mut client, _) = Client::upgrade(c.ws, OFFER);
    client.auth(&token(1, "k", 0));
    let mut bomb = Vec::new();
    ws::deflate::Deflater::new(9).compress(&vec![0u8; 1 << 20], &mut bomb);
    assert!(bomb.len() < 4096, "the wire limit alone would not catch it");
    client.write_raw(&ws::encode_client_frame_ext(
        ws::Opcode::Binary,
        true,
        true,
        [1, 2, 3, 4],
        &bomb,
    ));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::FrameTooLarge) == 1);
}

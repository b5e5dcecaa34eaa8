use super::*;
use crate::ws::{self, Assembler, FrameError, Masking, Message, Opcode};

fn offer(name: &str, params: &[(&str, Option<&str>)]) -> Offer {
    Offer {
        name: name.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
    }
}

#[test]
fn offers_parse_with_parameters_quotes_and_several_lines() {
    let h = "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\" ,\
             ,x-webkit-deflate-frame,\tpermessage-deflate ;client_max_window_bits = 12";
    assert_eq!(
        parse_offers(h).unwrap(),
        vec![
            offer(
                "permessage-deflate",
                &[
                    ("client_max_window_bits", None),
                    ("server_max_window_bits", Some("10"))
                ]
            ),
            offer("x-webkit-deflate-frame", &[]),
            offer(
                "permessage-deflate",
                &[("client_max_window_bits", Some("12"))]
            ),
        ]
    );
    assert_eq!(parse_offers("").unwrap(), vec![]);
    assert_eq!(parse_offers(" , ").unwrap(), vec![]);
    // An escaped character inside quotes is taken as itself.
    assert_eq!(
        parse_offers("a; b=\"1\\5\"").unwrap(),
        vec![offer("a", &[("b", Some("15"))])]
    );
}

#[test]
fn malformed_offers_are_syntax_errors() {
    for (h, at) in [
        ("permessage-deflate;", 19),
        (";x", 0),
        ("a b", 2),
        ("a; b=", 5),
        ("a; =c", 3),
        ("a; b=\"c d\"", 5),
        ("a; b=\"open", 5),
        ("a; b=\"\"", 5),
        ("\"a\"", 0),
        ("a; b=c=d", 6),
        ("a; b=\"x\\", 8),
    ] {
        let e = parse_offers(h).unwrap_err();
        assert_eq!(e.at, at, "{h:?}: {e}");
    }
}

#[test]
fn offers_are_judged_as_rfc_7692_section_7_1_says() {
    let ok = |p: &[(&str, Option<&str>)]| judge(&offer(NAME, p));
    let plain = Ok(Agreed {
        server_max_window_bits: false,
    });
    assert_eq!(ok(&[]), plain);
    assert_eq!(ok(&[("client_max_window_bits", None)]), plain);
    assert_eq!(ok(&[("client_max_window_bits", Some("8"))]), plain);
    assert_eq!(
        ok(&[
            ("server_no_context_takeover", None),
            ("CLIENT_NO_CONTEXT_TAKEOVER", None)
        ]),
        plain
    );
    assert_eq!(
        ok(&[("server_max_window_bits", Some("15"))]),
        Ok(Agreed {
            server_max_window_bits: true
        })
    );
    assert_eq!(
        ok(&[("server_max_window_bits", Some("12"))]),
        Err(Decline::ServerWindow(12))
    );
    for v in ["7", "16", "08", "", "1a", "150"] {
        assert_eq!(
            ok(&[("client_max_window_bits", Some(v))]),
            Err(Decline::BadValue("client_max_window_bits".into())),
            "{v:?}"
        );
    }
    assert_eq!(
        ok(&[("server_max_window_bits", None)]),
        Err(Decline::BadValue("server_max_window_bits".into()))
    );
    assert_eq!(
        ok(&[("server_no_context_takeover", Some("1"))]),
        Err(Decline::BadValue("server_no_context_takeover".into()))
    );
    assert_eq!(
        ok(&[
            ("client_max_window_bits", None),
            ("client_max_window_bits", Some("9"))
        ]),
        Err(Decline::Duplicate("client_max_window_bits".into()))
    );
    assert_eq!(
        ok(&[("mystery", None)]),
        Err(Decline::UnknownParam("mystery".into()))
    );
    assert_eq!(
        judge(&offer("x-webkit-deflate-frame", &[])),
        Err(Decline::OtherExtension)
    );
}

#[test]
fn the_first_acceptable_offer_wins() {
    let offers = parse_offers(
        "foo, permessage-deflate; server_max_window_bits=10, \
         permessage-deflate; server_max_window_bits=15; client_max_window_bits, permessage-deflate",
    )
    .unwrap();
    let agreed = negotiate(&offers).unwrap();
    assert!(agreed.server_max_window_bits);
    assert_eq!(
        agreed.response(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=15"
    );
    let none = parse_offers("permessage-deflate; server_max_window_bits=9, foo").unwrap();
    assert_eq!(negotiate(&none), None);
    assert_eq!(negotiate(&[]), None);
}

fn round_trip(msg: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    Deflater::new(6).compress(msg, &mut z);
    assert!(!z.ends_with(&TAIL) || z.len() < TAIL.len(), "tail stripped");
    let mut back = b"kept".to_vec();
    Inflater::new().inflate(&z, msg.len(), &mut back).unwrap();
    assert_eq!(&back[..4], b"kept", "appends to what out holds");
    assert_eq!(&back[4..], msg);
    z
}

fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn messages_round_trip() {
    assert_eq!(round_trip(b""), vec![0x00], "RFC 7692 §7.2.3.6");
    round_trip(b"a");
    let json = br#"{"conversation":{"kind":"group","id":42},"seq":7,"body":"hello"}"#.repeat(40);
    let z = round_trip(&json);
    assert!(z.len() * 10 < json.len(), "{} of {}", z.len(), json.len());
    // Incompressible and larger than the output steps of both sides.
    round_trip(&noise(200_000));
}

/// With no context takeover a message compresses to the same bytes whatever was compressed
/// before and whichever compressor does it: what lets comet compress a push once for all.
#[test]
fn a_message_compresses_the_same_every_time() {
    let msg = br#"{"op":"message","body":"the same push for every receiver"}"#.repeat(5);
    let mut a = Vec::new();
    let mut d = Deflater::new(6);
    d.compress(&msg, &mut a);
    let mut other = Vec::new();
    d.compress(&noise(5000), &mut other);
    let mut b = Vec::new();
    d.compress(&msg, &mut b);
    let mut c = Vec::new();
    Deflater::new(6).compress(&msg, &mut c);
    assert_eq!(a, b);
    assert_eq!(a, c);
    // In parts (a goim header, then the body) it is the same stream.
    let mut parts = Vec::new();
    Deflater::new(6).compress_parts(&[&msg[..16], &msg[16..]], &mut parts);
    let mut back = Vec::new();
    Inflater::new()
        .inflate(&parts, msg.len(), &mut back)
        .unwrap();
    assert_eq!(back, msg);
}

/// The examples of RFC 7692 §7.2.3.
#[test]
fn rfc_examples_inflate() {
    let hello = |payload: &[u8]| {
        let mut out = Vec::new();
        Inflater::new().inflate(payload, 100, &mut out).unwrap();
        out
    };
    // §7.2.3.1: "Hello" compressed; §7.2.3.3 (BFINAL set, then data that is ignored not
    // being sent); §7.2.3.2: a stored block.
    assert_eq!(hello(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
    assert_eq!(hello(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
    assert_eq!(
        hello(&[
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00
        ]),
        b"Hello"
    );
    let mut z = Vec::new();
    Deflater::new(6).compress(b"Hello", &mut z);
    assert_eq!(z, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    // The whole frame of §7.2.3.1, RSV1 set.
    let mut frame = vec![0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let h = ws::decode_frame_ext(&mut frame, 100, Masking::Optional, true)
        .unwrap()
        .unwrap();
    assert!(h.compressed && h.fin && h.opcode == Opcode::Text);
}

#[test]
fn a_bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 10 << 20];
    let mut z = Vec::new();
    Deflater::new(9).compress(&zeros, &mut z);
    assert!(z.len() < 20_000, "{}", z.len());
    let mut out = Vec::new();
    let r = Inflater::new().inflate(&z, 4096, &mut out);
    assert_eq!(r, Err(InflateError::TooLarge { max: 4096 }));
    assert!(out.len() <= 4096);
    assert!(out.capacity() < 64 * 1024, "grew to {}", out.capacity());
    // At the limit exactly is fine; one byte over is not.
    let msg = vec![7u8; 4096];
    let mut z = Vec::new();
    Deflater::new(6).compress(&msg, &mut z);
    let mut out = Vec::new();
    Inflater::new().inflate(&z, 4096, &mut out).unwrap();
    assert_eq!(out, msg);
    assert_eq!(
        Inflater::new().inflate(&z, 4095, &mut Vec::new()),
        Err(InflateError::TooLarge { max: 4095 })
    );
}

/// Found by `fuzz/` (ws_frames, `fuzz/regressions/ws_frames/`): a message that inflates
/// past the limit and only then turns invalid was `Corrupt` with one byte over the limit
/// left in `out`; it is too large (an inflater that stops at the limit never reads the bad
/// bytes) and `out` stays within the limit.
#[test]
fn data_that_turns_invalid_past_the_limit_is_too_large() {
    let z = hex::decode(
        "ecc13101000000c2a0f54f6d0d0fa0000200000000080000000000000000010036fa26133799425e5499a6\
         bab07da6bab07da6bab07da6bab07da6bab07da6bab07da6bab07da6bab07da6bab099425e5499425e5499\
         425e5499425e5499425e54fa213d37fa213d37fa213d37fa213d37fa",
    )
    .unwrap();
    let max = 17_424; // The packet limit the fuzzer's connection had.
    let mut out = Vec::new();
    let r = Inflater::new().inflate(&z, max, &mut out);
    assert_eq!(r, Err(InflateError::TooLarge { max }));
    assert!(out.len() <= max, "{} bytes kept", out.len());
    // Under the limit, the same bytes are invalid data.
    assert_eq!(
        Inflater::new().inflate(&z, 1 << 20, &mut Vec::new()),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn garbage_is_corrupt() {
    // BTYPE 11 is reserved (RFC 1951 §3.2.3).
    assert_eq!(
        Inflater::new().inflate(&[0xff; 10], 4096, &mut Vec::new()),
        Err(InflateError::Corrupt)
    );
    // An inflater that failed is good for the next message.
    let mut i = Inflater::new();
    let _ = i.inflate(&[0xff; 10], 4096, &mut Vec::new());
    let mut out = Vec::new();
    i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 10, &mut out)
        .unwrap();
    assert_eq!(out, b"Hello");
}

#[test]
fn rsv1_is_judged_by_what_was_negotiated() {
    let frame = |b0: u8| vec![b0, 0x00];
    let decode = |mut f: Vec<u8>, deflate| {
        ws::decode_frame_ext(&mut f, 100, Masking::Optional, deflate)
            .map(|h| h.map(|h| h.compressed))
    };
    // RFC 6455 §5.2: a reserved bit with no extension that defines it.
    assert_eq!(decode(frame(0xc2), false), Err(FrameError::Reserved));
    assert_eq!(decode(frame(0xc2), true), Ok(Some(true)));
    assert_eq!(decode(frame(0x82), true), Ok(Some(false)));
    // RFC 7692 §6.1: never on control or continuation frames; RSV2/RSV3 stay reserved.
    assert_eq!(
        decode(frame(0xc9), true),
        Err(FrameError::CompressedControl)
    );
    assert_eq!(
        decode(frame(0xc8), true),
        Err(FrameError::CompressedControl)
    );
    assert_eq!(
        decode(frame(0xc0), true),
        Err(FrameError::CompressedContinuation)
    );
    assert_eq!(decode(frame(0xa2), true), Err(FrameError::Reserved));
    assert_eq!(decode(frame(0x92), true), Err(FrameError::Reserved));
}

#[test]
fn a_fragmented_compressed_message_is_reassembled_then_inflated() {
    let msg = b"Hello, Hello, Hello, Hello".repeat(10);
    let mut z = Vec::new();
    Deflater::new(6).compress(&msg, &mut z);
    let (a, b) = z.split_at(z.len() / 2);
    let mut wire = ws::encode_client_frame_ext(Opcode::Binary, false, true, [1, 2, 3, 4], a);
    wire.extend(ws::encode_client_frame(
        Opcode::Continuation,
        true,
        [5, 6, 7, 8],
        b,
    ));
    let mut asm = Assembler::new(1000);
    let mut pos = 0;
    let mut got = None;
    while pos < wire.len() {
        let h = ws::decode_frame_ext(&mut wire[pos..], 1000, Masking::Required, true)
            .unwrap()
            .unwrap();
        let payload = wire[pos + h.header_len..pos + h.frame_len()].to_vec();
        pos += h.frame_len();
        if let Some(Message::Compressed(p)) = asm.push(&h, &payload).unwrap() {
            got = Some(p.to_vec());
        }
    }
    let mut out = Vec::new();
    Inflater::new()
        .inflate(&got.expect("a compressed message"), 1000, &mut out)
        .unwrap();
    assert_eq!(out, msg);
    // The next, uncompressed message is data again.
    let mut plain = ws::encode_client_frame(Opcode::Binary, true, [0; 4], b"x");
    let h = ws::decode_frame_ext(&mut plain, 1000, Masking::Required, true)
        .unwrap()
        .unwrap();
    let payload = plain[h.header_len..].to_vec();
    assert_eq!(asm.push(&h, &payload).unwrap(), Some(Message::Data(b"x")));
}

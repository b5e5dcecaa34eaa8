use super::*;

const REQ: &str = "GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: a=b\r\n\r\n";

#[test]
fn rfc_accept_key() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn upgrade_parses_at_every_split() {
    let mut bytes = REQ.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x82\x00");
    for cut in 0..REQ.len() {
        assert_eq!(parse_upgrade(&bytes[..cut]), Ok(None), "cut {cut}");
    }
    let up = parse_upgrade(&bytes).unwrap().unwrap();
    assert_eq!(up.path, "/sub");
    assert_eq!(up.cookie, "a=b");
    assert_eq!(up.consumed, REQ.len());
    let resp = String::from_utf8(switching_protocols(&up.key)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}

#[test]
fn bad_upgrades_are_typed() {
    let post = REQ.replacen("GET", "POST", 1);
    assert!(matches!(
        parse_upgrade(post.as_bytes()),
        Err(HandshakeError::Method(_))
    ));
    let v12 = REQ.replace("Version: 13", "Version: 12");
    assert_eq!(parse_upgrade(v12.as_bytes()), Err(HandshakeError::Version));
    let noversion = REQ.replace("Sec-WebSocket-Version: 13\r\n", "");
    assert_eq!(
        parse_upgrade(noversion.as_bytes()),
        Err(HandshakeError::Version)
    );
    let plain = REQ.replace("Upgrade: WebSocket\r\n", "");
    assert_eq!(
        parse_upgrade(plain.as_bytes()),
        Err(HandshakeError::NotUpgrade)
    );
    let nokey = REQ.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(
        parse_upgrade(nokey.as_bytes()),
        Err(HandshakeError::MissingKey)
    );
    for key in [
        "a2V5",                     // base64 of 3 bytes
        "AAAAAAAAAAAAAAAAAAAAAAAA", // 18 bytes
        "dGhlIHNhbXBsZSBub25jZQ",   // unpadded
        "dGhlIHNhbXBsZSBub25jZQ=!", // not base64
        "dGhlIHNhbXBsZSBub25jZR==", // trailing bits set: not canonical
    ] {
        let bad = REQ.replace("dGhlIHNhbXBsZSBub25jZQ==", key);
        assert_eq!(
            parse_upgrade(bad.as_bytes()),
            Err(HandshakeError::BadKey),
            "{key}"
        );
    }
    assert!(matches!(
        parse_upgrade(b"\x00\x01garbage\r\n\r\n"),
        Err(HandshakeError::Malformed(_))
    ));
    let huge = format!("GET /sub HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HANDSHAKE));
    assert_eq!(
        parse_upgrade(huge.as_bytes()),
        Err(HandshakeError::TooLarge)
    );
}

#[test]
fn refusals_follow_rfc_6455() {
    // §4.2.2: a version the server does not speak gets 426 and the versions it does.
    let v12 = REQ.replace("Version: 13", "Version: 12");
    let refusal = parse_upgrade(v12.as_bytes()).unwrap_err().response();
    assert_eq!(
        String::from_utf8(refusal).unwrap(),
        "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    // Anything else is a bad request, the version header left out.
    for bad in [
        REQ.replace("dGhlIHNhbXBsZSBub25jZQ==", "a2V5"),
        REQ.replace("Upgrade: WebSocket\r\n", ""),
        REQ.replacen("GET", "PUT", 1),
    ] {
        let refusal = parse_upgrade(bad.as_bytes()).unwrap_err().response();
        assert_eq!(
            String::from_utf8(refusal).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
    }
    // Not an upgrade at all is a bad request, not a wrong version.
    assert_eq!(
        parse_upgrade(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n"),
        Err(HandshakeError::NotUpgrade)
    );
}

#[test]
fn unmasked_frames_are_refused_from_the_header_when_masking_is_required() {
    let unmasked = encode_frame(Opcode::Binary, &[7u8; 300]);
    // Two bytes tell: the payload need not arrive.
    assert_eq!(
        decode_frame(&mut unmasked[..2].to_vec(), 4112, Masking::Required),
        Err(FrameError::Unmasked)
    );
    let mut ping = encode_frame(Opcode::Ping, b"p");
    assert_eq!(
        decode_frame(&mut ping, 4112, Masking::Required),
        Err(FrameError::Unmasked)
    );
    let mut ok = unmasked.clone();
    let head = decode_frame(&mut ok, 4112, Masking::Optional)
        .unwrap()
        .unwrap();
    assert_eq!(head.payload_len, 300);
    let mut masked = encode_client_frame(Opcode::Binary, true, [1, 2, 3, 4], &[7u8; 300]);
    let head = decode_frame(&mut masked, 4112, Masking::Required)
        .unwrap()
        .unwrap();
    assert_eq!(&masked[head.header_len..], &[7u8; 300][..]);
    for cut in 0..2 {
        assert_eq!(
            decode_frame(&mut unmasked[..cut].to_vec(), 4112, Masking::Required),
            Ok(None)
        );
    }
}

/// Decodes a whole stream of frames fed in two parts, returning the messages.
fn feed(stream: &[u8], cut: usize, max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut asm = Assembler::new(max);
    for part in [&stream[..cut], &stream[cut..]] {
        pending.extend_from_slice(part);
        while let Some(head) = decode_frame(&mut pending, max, Masking::Optional)? {
            let payload = pending[head.header_len..head.frame_len()].to_vec();
            match asm.push(&head, &payload)? {
                Some(Message::Data(d)) => out.push(d.to_vec()),
                Some(Message::Ping(p)) => out.push([b"ping:", p].concat()),
                Some(Message::Pong) => out.push(b"pong".to_vec()),
                Some(Message::Close(_)) => out.push(b"close".to_vec()),
                Some(Message::Compressed(_)) => unreachable!("RSV1 is refused without deflate"),
                None => {}
            }
            pending.drain(..head.frame_len());
        }
    }
    assert!(pending.is_empty());
    Ok(out)
}

#[test]
fn every_split_of_a_frame_stream() {
    let mut s = Vec::new();
    s.extend(encode_client_frame(
        Opcode::Binary,
        true,
        [1, 2, 3, 4],
        b"hello",
    ));
    s.extend(encode_client_frame(
        Opcode::Text,
        false,
        [9, 9, 9, 9],
        b"frag",
    ));
    s.extend(encode_client_frame(Opcode::Ping, true, [5, 6, 7, 8], b"p"));
    s.extend(encode_client_frame(
        Opcode::Continuation,
        true,
        [0, 1, 0, 1],
        &[7u8; 300],
    ));
    s.extend(encode_frame(Opcode::Binary, b"unmasked"));
    s.extend(encode_client_frame(Opcode::Close, true, [1, 1, 1, 1], b""));
    for cut in 0..=s.len() {
        let msgs = feed(&s, cut, 4112).unwrap();
        assert_eq!(msgs.len(), 5, "cut {cut}");
        assert_eq!(msgs[0], b"hello");
        assert_eq!(msgs[1], b"ping:p");
        assert_eq!(&msgs[2][..4], b"frag");
        assert_eq!(msgs[2].len(), 304);
        assert_eq!(msgs[3], b"unmasked");
        assert_eq!(msgs[4], b"close");
    }
}

/// RFC 6455 §5.5.1, §7.4: a close frame with a status code a peer may not send, a 1-byte
/// body or a reason that is not UTF-8 is a protocol error (the endpoint closes with 1002),
/// not a close to echo (the break-it run of issue 15: comet echoed 5000 back).
#[test]
fn close_frames_carry_a_code_a_peer_may_send_and_a_utf8_reason() {
    let close = |body: &[u8]| {
        feed(
            &encode_client_frame(Opcode::Close, true, [3; 4], body),
            0,
            4112,
        )
    };
    for ok in [
        &b""[..],
        &[0x03, 0xe8],
        &[0x03, 0xe8, b'b', b'y', b'e'],
        &[0x0f, 0xa0],
        &[0x13, 0x87],
    ] {
        assert_eq!(close(ok), Ok(vec![b"close".to_vec()]), "{ok:?}");
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        assert_eq!(
            close(&code.to_be_bytes()),
            Err(FrameError::BadClose("a status code a peer may not send")),
            "{code}"
        );
    }
    assert_eq!(close(&[0x03]), Err(FrameError::BadClose("a 1-byte body")));
    assert_eq!(
        close(&[0x03, 0xe8, 0xff, 0xfe]),
        Err(FrameError::BadClose("a reason that is not UTF-8"))
    );
    assert!(close_code_ok(1000) && close_code_ok(4999) && !close_code_ok(1005));
}

#[test]
fn length_encodings_round_trip() {
    for len in [0usize, 125, 126, 65535, 65536, 70000] {
        let payload = vec![0x5a; len];
        let mut f = encode_frame(Opcode::Binary, &payload);
        assert_eq!(f.len(), header_len(len) + len);
        let head = decode_frame(&mut f, 1 << 20, Masking::Optional)
            .unwrap()
            .unwrap();
        assert_eq!((head.payload_len, head.header_len), (len, header_len(len)));
        let mut c = encode_client_frame(Opcode::Binary, true, [3, 1, 4, 1], &payload);
        let head = decode_frame(&mut c, 1 << 20, Masking::Required)
            .unwrap()
            .unwrap();
        assert_eq!(&c[head.header_len..], &payload[..]);
    }
}

#[test]
fn limits_and_protocol_errors() {
    let big = encode_client_frame(Opcode::Binary, true, [0; 4], &[0u8; 5000]);
    // Refused from the header alone.
    assert!(matches!(
        decode_frame(&mut big[..8].to_vec(), 4112, Masking::Required),
        Err(FrameError::TooLarge {
            len: 5000,
            max: 4112
        })
    ));
    let mut rsv = encode_frame(Opcode::Binary, b"x");
    rsv[0] |= 0x40;
    assert_eq!(
        decode_frame(&mut rsv, 4112, Masking::Optional),
        Err(FrameError::Reserved)
    );
    let mut op = encode_frame(Opcode::Binary, b"x");
    op[0] = 0x83;
    assert_eq!(
        decode_frame(&mut op, 4112, Masking::Optional),
        Err(FrameError::Opcode(3))
    );
    let mut ping = encode_frame(Opcode::Ping, &[0u8; 126]);
    assert_eq!(
        decode_frame(&mut ping, 4112, Masking::Optional),
        Err(FrameError::BadControl)
    );
    let cont = encode_client_frame(Opcode::Continuation, true, [0; 4], b"x");
    assert_eq!(
        feed(&cont, 0, 4112),
        Err(FrameError::UnexpectedContinuation)
    );
    let mut two = encode_client_frame(Opcode::Binary, false, [0; 4], b"a");
    two.extend(encode_client_frame(Opcode::Binary, true, [0; 4], b"b"));
    assert_eq!(feed(&two, 0, 4112), Err(FrameError::ExpectedContinuation));
    let mut many = encode_client_frame(Opcode::Binary, false, [0; 4], b"a");
    for _ in 0..=MAX_FRAGMENTS {
        many.extend(encode_client_frame(
            Opcode::Continuation,
            false,
            [0; 4],
            b"a",
        ));
    }
    assert_eq!(feed(&many, 0, 4112), Err(FrameError::TooManyFragments));
    let mut grow = encode_client_frame(Opcode::Binary, false, [0; 4], &[0u8; 4000]);
    grow.extend(encode_client_frame(
        Opcode::Continuation,
        true,
        [0; 4],
        &[0u8; 200],
    ));
    assert!(matches!(
        feed(&grow, 0, 4112),
        Err(FrameError::TooLarge { len: 4200, .. })
    ));
}

#[test]
fn extension_headers_are_joined_and_answered() {
    let req = REQ.replace(
        "Cookie: a=b\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Cookie: a=b\r\nsec-websocket-extensions: foo\r\n",
    );
    let up = parse_upgrade(req.as_bytes()).unwrap().unwrap();
    assert_eq!(
        up.extensions,
        "permessage-deflate; client_max_window_bits, foo"
    );
    assert_eq!(
        parse_upgrade(REQ.as_bytes()).unwrap().unwrap().extensions,
        ""
    );
    let resp = String::from_utf8(switching_protocols_with(
        &up.key,
        Some("permessage-deflate"),
    ))
    .unwrap();
    assert!(resp.ends_with("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"));
}

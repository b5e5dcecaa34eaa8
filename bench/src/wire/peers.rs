//! The other peers' wire formats, small enough to speak here: Redis (RESP2), NATS (text
//! protocol) and MQTT 3.1.1. What a subscriber reads becomes the same [`Event`]s as goim's.

use super::{Event, WireError};

/// Finds `\r\n` at or after `from`.
fn crlf(input: &[u8], from: usize) -> Option<usize> {
    input[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn number(bytes: &[u8], what: &'static str) -> Result<i64, WireError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(WireError::Malformed(what))
}

/// RESP pushes on a subscribed connection: `*3` arrays of bulk strings, the third an
/// integer for (un)subscribe confirmations.
pub(super) fn parse_resp(input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, WireError> {
    let mut used = 0;
    'outer: while used < input.len() {
        let Some(eol) = crlf(input, used) else {
            break;
        };
        match input[used] {
            b'*' => {
                let n = number(&input[used + 1..eol], "resp")?;
                let mut at = eol + 2;
                let mut parts: [&[u8]; 3] = [&[], &[], &[]];
                #[allow(clippy::needless_range_loop)] // `i` also counts elements past the third
                for i in 0..n as usize {
                    let Some(e) = crlf(input, at) else {
                        break 'outer;
                    };
                    match input.get(at) {
                        Some(b'$') => {
                            let len = number(&input[at + 1..e], "resp")? as usize;
                            let start = e + 2;
                            if input.len() < start + len + 2 {
                                break 'outer;
                            }
                            if i < 3 {
                                parts[i] = &input[start..start + len];
                            }
                            at = start + len + 2;
                        }
                        Some(b':') => {
                            if i < 3 {
                                parts[i] = &input[at + 1..e];
                            }
                            at = e + 2;
                        }
                        _ => return Err(WireError::Malformed("resp")),
                    }
                }
                match parts[0] {
                    b"message" => on(Event::Payload(parts[2])),
                    b"subscribe" => on(Event::Ready),
                    _ => {}
                }
                used = at;
            }
            b'-' => {
                return Err(WireError::Refused(
                    String::from_utf8_lossy(&input[used..eol]).into_owned(),
                ));
            }
            _ => used = eol + 2, // +OK, :n, pong
        }
    }
    Ok(used)
}

/// NATS: `MSG subject sid [reply] size\r\npayload\r\n`, `PING`, `PONG`, `+OK`, `INFO`.
pub(super) fn parse_nats(input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, WireError> {
    let mut used = 0;
    while let Some(eol) = crlf(input, used) {
        let line = &input[used..eol];
        if line.starts_with(b"MSG ") {
            let size = line
                .rsplit(|&b| b == b' ')
                .next()
                .ok_or(WireError::Malformed("nats"))?;
            let size = number(size, "nats")? as usize;
            let start = eol + 2;
            if input.len() < start + size + 2 {
                break;
            }
            on(Event::Payload(&input[start..start + size]));
            used = start + size + 2;
            continue;
        }
        if line == b"PING" {
            on(Event::Reply(b"PONG\r\n"));
        } else if line == b"PONG" {
            on(Event::Ready);
        } else if line.starts_with(b"-ERR") {
            return Err(WireError::Refused(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        used = eol + 2;
    }
    Ok(used)
}

/// MQTT fixed header: type byte and the remaining length (a varint of up to 4 bytes).
fn mqtt_header(input: &[u8]) -> Result<Option<(u8, usize, usize)>, WireError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = input.get(1 + i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((input[0], 2 + i, len)));
        }
    }
    Err(WireError::Malformed("mqtt"))
}

pub(super) fn parse_mqtt(input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, WireError> {
    let mut used = 0;
    while let Some((kind, head, len)) = mqtt_header(&input[used..])? {
        if input.len() < used + head + len {
            break;
        }
        let body = &input[used + head..used + head + len];
        match kind >> 4 {
            3 => {
                // PUBLISH at QoS 0: topic length, topic, payload.
                if body.len() < 2 {
                    return Err(WireError::Malformed("mqtt"));
                }
                let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                let qos = (kind >> 1) & 3;
                let skip = 2 + tlen + if qos > 0 { 2 } else { 0 };
                if body.len() < skip {
                    return Err(WireError::Malformed("mqtt"));
                }
                on(Event::Payload(&body[skip..]));
            }
            2 if body.get(1).is_some_and(|&rc| rc != 0) => {
                return Err(WireError::Refused(format!("CONNACK {}", body[1])));
            }
            9 => on(Event::Ready),
            _ => {}
        }
        used += head + len;
    }
    Ok(used)
}

/// A RESP command.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn mqtt_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

pub(super) fn mqtt_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    mqtt_len(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

pub(super) fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend((s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, clean session, keepalive off.
pub fn mqtt_connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.extend([4, 0x02, 0, 0]);
    mqtt_str(client_id.as_bytes(), &mut body);
    mqtt_packet(0x10, &body)
}

/// SUBSCRIBE to one topic at QoS 0, packet id 1.
pub fn mqtt_subscribe(topic: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    mqtt_str(topic.as_bytes(), &mut body);
    body.push(0);
    mqtt_packet(0x82, &body)
}

/// PUBLISH at QoS 1 with a packet id (the broker answers PUBACK).
pub fn mqtt_publish(topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    mqtt_str(topic.as_bytes(), &mut body);
    body.extend(id.to_be_bytes());
    body.extend_from_slice(payload);
    mqtt_packet(0x32, &body)
}

/// Reads MQTT packets from a publisher's stream: counts PUBACKs and CONNACKs.
pub fn mqtt_acks(input: &[u8], acks: &mut usize) -> Result<usize, WireError> {
    let mut used = 0;
    while let Some((kind, head, len)) = mqtt_header(&input[used..])? {
        if input.len() < used + head + len {
            break;
        }
        if kind >> 4 == 4 {
            *acks += 1;
        }
        used += head + len;
    }
    Ok(used)
}

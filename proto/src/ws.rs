//! A sans-IO WebSocket server codec (RFC 6455), enough for goim's `/sub` endpoint: the
//! upgrade request and its refusals, frame headers (client frames masked or not, as goim
//! accepts both, unless [`Masking::Required`]), fragment reassembly with limits, and server
//! frame headers. One extension, permessage-deflate (RFC 7692, [`deflate`]), negotiated only
//! when the server is configured for it: goim never negotiated it, so by default any
//! reserved bit is an error.
//!
//! Decoding is resumable like [`crate::packet`]: `Ok(None)` means "give me more bytes".

use base64::Engine;
use sha1::{Digest, Sha1};
use thiserror::Error;

pub mod deflate;

/// The largest upgrade request accepted (request line and headers).
pub const MAX_HANDSHAKE: usize = 8192;
/// goim accepts at most 100 continuation frames per message.
pub const MAX_FRAGMENTS: usize = 100;
/// Largest control frame payload the RFC allows.
pub const MAX_CONTROL: usize = 125;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request. `path` is not judged here: comet serves only `/sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Request target as sent, query included.
    pub path: String,
    pub key: String,
    /// The `Cookie` header, passed to logic's Connect like goim does; empty when absent.
    pub cookie: String,
    /// Every `Sec-WebSocket-Extensions` header, joined with `, ` (RFC 6455 §9.1: several
    /// header lines are one list); empty when absent. Judged by [`deflate::parse_offers`].
    pub extensions: String,
    /// Bytes of the request (anything after it is the first frames).
    pub consumed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("upgrade request over {MAX_HANDSHAKE} bytes")]
    TooLarge,
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("method {0} is not GET")]
    Method(String),
    #[error("Sec-WebSocket-Version is not 13")]
    Version,
    #[error("not a WebSocket upgrade (Upgrade/Connection headers)")]
    NotUpgrade,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    BadKey,
}

impl HandshakeError {
    /// The HTTP response refusing the upgrade, after which the connection closes. RFC 6455
    /// §4.2.2: a version the server does not speak gets `426` naming the one it does, so the
    /// client can retry with it; anything else is a `400`.
    pub fn response(&self) -> Vec<u8> {
        match self {
            HandshakeError::Version => b"HTTP/1.1 426 Upgrade Required\r\n\
                Sec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            _ => http_error(400, "Bad Request"),
        }
    }
}

/// Parses the upgrade request at the start of `buf`.
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<Upgrade>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HANDSHAKE => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::Malformed("more than 32 headers".into()));
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    if consumed > MAX_HANDSHAKE {
        return Err(HandshakeError::TooLarge);
    }
    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return Err(HandshakeError::Method(method.to_string()));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let upgrade_ok = header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_ok = header("Connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade_ok || !connection_ok {
        return Err(HandshakeError::NotUpgrade);
    }
    // Checked after the upgrade headers: a plain GET is a bad request, not a wrong version.
    if header("Sec-WebSocket-Version").as_deref() != Some("13") {
        return Err(HandshakeError::Version);
    }
    let key = header("Sec-WebSocket-Key").unwrap_or_default();
    if key.is_empty() {
        return Err(HandshakeError::MissingKey);
    }
    // RFC 6455 §4.1: a random 16-byte nonce, base64-encoded (24 characters, padded).
    let nonce = base64::engine::general_purpose::STANDARD.decode(&key);
    if !nonce.is_ok_and(|n| n.len() == 16) {
        return Err(HandshakeError::BadKey);
    }
    Ok(Some(Upgrade {
        path: req.path.unwrap_or_default().to_string(),
        key,
        cookie: header("Cookie").unwrap_or_default(),
        extensions: req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        consumed,
    }))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The 101 response goim writes.
pub fn switching_protocols(key: &str) -> Vec<u8> {
    switching_protocols_with(key, None)
}

/// The 101 response, with a `Sec-WebSocket-Extensions` answer when an extension was agreed
/// (RFC 6455 §4.2.2, RFC 7692 §5).
pub fn switching_protocols_with(key: &str, extensions: Option<&str>) -> Vec<u8> {
    let ext = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{ext}\r\n",
        accept_key(key)
    )
    .into_bytes()
}

/// A plain HTTP error for a refused upgrade, after which the connection closes.
pub fn http_error(status: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// RSV1: with permessage-deflate, the first frame of a compressed message (RFC 7692 §6).
    pub compressed: bool,
    pub opcode: Opcode,
    pub header_len: usize,
    pub payload_len: usize,
}

impl FrameHead {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Whether frames must be masked. RFC 6455 §5.1: a server MUST close a connection whose
/// client sends an unmasked frame. goim accepts them, and some native goim clients send them,
/// so comet requires masking only when configured to; clients reading server frames, which
/// are unmasked, pass `Optional`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masking {
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("unmasked client frame (masking is required)")]
    Unmasked,
    #[error("reserved bits set (no extension was negotiated)")]
    Reserved,
    /// RFC 7692 §6.1: RSV1 on a control frame.
    #[error("RSV1 set on a control frame")]
    CompressedControl,
    /// RFC 7692 §6.1: RSV1 belongs to a message's first frame only.
    #[error("RSV1 set on a continuation frame")]
    CompressedContinuation,
    #[error("unknown opcode {0}")]
    Opcode(u8),
    #[error("control frame over 125 bytes or fragmented")]
    BadControl,
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is open")]
    ExpectedContinuation,
    #[error("more than {MAX_FRAGMENTS} fragments")]
    TooManyFragments,
    /// RFC 6455 §5.5.1, §7.4: a close body of 1 byte, a status code an endpoint may not send,
    /// or a reason that is not UTF-8 (§8.1).
    #[error("bad close frame: {0}")]
    BadClose(&'static str),
}

/// Whether a peer may send close status `code` (RFC 6455 §7.4.1, §7.4.2, and IANA's
/// registry): 1000–1003 and 1007–1014 (1004 is reserved; 1005, 1006 and 1015 are never sent
/// in a frame; 1016–2999 are reserved), and 3000–4999 (libraries, applications).
pub fn close_code_ok(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close frame's body (RFC 6455 §5.5.1): empty, or a status code a peer may send
/// ([`close_code_ok`]) followed by a UTF-8 reason.
pub fn check_close(payload: &[u8]) -> Result<(), FrameError> {
    match payload {
        [] => Ok(()),
        [_] => Err(FrameError::BadClose("a 1-byte body")),
        [a, b, reason @ ..] => {
            if !close_code_ok(u16::from_be_bytes([*a, *b])) {
                return Err(FrameError::BadClose("a status code a peer may not send"));
            }
            std::str::from_utf8(reason)
                .map(|_| ())
                .map_err(|_| FrameError::BadClose("a reason that is not UTF-8"))
        }
    }
}

/// Decodes the frame at the start of `buf`, unmasking its payload in place. Returns the head;
/// the payload is `buf[head.header_len..head.frame_len()]`. Sizes and masking are checked from
/// the header alone, so a bad frame is refused before its payload arrives.
pub fn decode_frame(
    buf: &mut [u8],
    max_message: usize,
    masking: Masking,
) -> Result<Option<FrameHead>, FrameError> {
    decode_frame_ext(buf, max_message, masking, false)
}

/// [`decode_frame`] on a connection that agreed permessage-deflate when `deflate` is set:
/// RSV1 then marks a compressed message's first frame (RFC 7692 §6), and is an error on a
/// control or continuation frame (§6.1). RSV2 and RSV3 are always errors (RFC 6455 §5.2).
pub fn decode_frame_ext(
    buf: &mut [u8],
    max_message: usize,
    masking: Masking,
    deflate: bool,
) -> Result<Option<FrameHead>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let compressed = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (compressed && !deflate) {
        return Err(FrameError::Reserved);
    }
    let opcode = Opcode::from_u8(b0 & 0x0f).ok_or(FrameError::Opcode(b0 & 0x0f))?;
    if compressed && opcode.is_control() {
        return Err(FrameError::CompressedControl);
    }
    if compressed && opcode == Opcode::Continuation {
        return Err(FrameError::CompressedContinuation);
    }
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if !masked && masking == Masking::Required {
        return Err(FrameError::Unmasked);
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            10,
        ),
        n => (n as u64, 2),
    };
    if opcode.is_control() && (len > MAX_CONTROL as u64 || !fin) {
        return Err(FrameError::BadControl);
    }
    if len > max_message as u64 {
        return Err(FrameError::TooLarge {
            len,
            max: max_message,
        });
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    let len = len as usize;
    if buf.len() < pos + len {
        return Ok(None);
    }
    if let Some(mask) = mask {
        for (i, b) in buf[pos..pos + len].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }
    Ok(Some(FrameHead {
        fin,
        compressed,
        opcode,
        header_len: pos,
        payload_len: len,
    }))
}

/// Bytes of a server frame header for a payload of `len` bytes (server frames are unmasked).
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Writes a FIN server frame header.
pub fn encode_header(out: &mut Vec<u8>, opcode: Opcode, len: usize) {
    encode_header_ext(out, opcode, false, len);
}

/// Writes a FIN server frame header, with RSV1 set when `compressed` (a permessage-deflate
/// message, RFC 7692 §6).
pub fn encode_header_ext(out: &mut Vec<u8>, opcode: Opcode, compressed: bool, len: usize) {
    out.push(0x80 | if compressed { 0x40 } else { 0 } | opcode as u8);
    match len {
        0..=125 => out.push(len as u8),
        126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A whole server frame.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    encode_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A complete client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Text or binary: goim reads both as a binary packet.
    Data(&'a [u8]),
    /// Text or binary whose first frame had RSV1 (permessage-deflate, RFC 7692 §6): the
    /// payload as received, still to be inflated.
    Compressed(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(&'a [u8]),
}

/// Reassembles fragmented messages. Holds no buffer until a message is fragmented.
#[derive(Debug)]
pub struct Assembler {
    max_message: usize,
    buf: Vec<u8>,
    fragments: usize,
    open: bool,
    /// The open message's first frame had RSV1.
    compressed: bool,
}

impl Assembler {
    pub fn new(max_message: usize) -> Self {
        Assembler {
            max_message,
            buf: Vec::new(),
            fragments: 0,
            open: false,
            compressed: false,
        }
    }

    /// Feeds one decoded frame; returns the message it completes, if any.
    pub fn push<'a>(
        &'a mut self,
        head: &FrameHead,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, FrameError> {
        match head.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload))),
            Opcode::Pong => Ok(Some(Message::Pong)),
            Opcode::Close => {
                check_close(payload)?;
                Ok(Some(Message::Close(payload)))
            }
            Opcode::Text | Opcode::Binary => {
                if self.open {
                    return Err(FrameError::ExpectedContinuation);
                }
                if head.fin {
                    return Ok(Some(data(head.compressed, payload)));
                }
                self.open = true;
                self.compressed = head.compressed;
                self.fragments = 0;
                self.buf.clear();
                self.buf.extend_from_slice(payload);
                Ok(None)
            }
            Opcode::Continuation => {
                if !self.open {
                    return Err(FrameError::UnexpectedContinuation);
                }
                self.fragments += 1;
                if self.fragments > MAX_FRAGMENTS {
                    return Err(FrameError::TooManyFragments);
                }
                let len = self.buf.len() + payload.len();
                if len > self.max_message {
                    return Err(FrameError::TooLarge {
                        len: len as u64,
                        max: self.max_message,
                    });
                }
                self.buf.extend_from_slice(payload);
                if !head.fin {
                    return Ok(None);
                }
                self.open = false;
                Ok(Some(data(self.compressed, &self.buf)))
            }
        }
    }

    /// Frees the reassembly buffer once a fragmented message has been handled, so an idle
    /// connection holds no memory here.
    pub fn release(&mut self) {
        if !self.open && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }
}

fn data(compressed: bool, payload: &[u8]) -> Message<'_> {
    if compressed {
        Message::Compressed(payload)
    } else {
        Message::Data(payload)
    }
}

/// Client-side frame encoding (masked), for tests and the bench tool.
pub fn encode_client_frame(opcode: Opcode, fin: bool, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    encode_client_frame_ext(opcode, fin, false, mask, payload)
}

/// [`encode_client_frame`] with RSV1 set when `compressed` (permessage-deflate).
pub fn encode_client_frame_ext(
    opcode: Opcode,
    fin: bool,
    compressed: bool,
    mask: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(if fin { 0x80 } else { 0 } | if compressed { 0x40 } else { 0 } | opcode as u8);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

#[cfg(test)]
mod tests;

//! permessage-deflate (RFC 7692), sans-IO: the `Sec-WebSocket-Extensions` header (RFC 6455
//! §9.1), the server's choice among the client's offers (RFC 7692 §7.1), and the per-message
//! codec (§7.2).
//!
//! Starling always answers `server_no_context_takeover; client_no_context_takeover`
//! (§7.1.1.1 and §7.1.1.2: a server may add the latter even if the client did not offer it),
//! so every message is compressed and inflated on its own: a connection keeps no compressor
//! or inflater state between messages, one [`Deflater`] and one [`Inflater`] per thread serve
//! every connection, and a pushed message compresses to the same bytes for every receiver.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

/// The extension's registered name (RFC 7692 §7).
pub const NAME: &str = "permessage-deflate";

/// What a sync flush leaves at the end of a message and the sender strips (RFC 7692 §7.2.1);
/// the receiver appends it back before inflating (§7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window, in bits (RFC 7692 §7.1.2: values 8 to 15).
pub const MAX_WINDOW_BITS: u8 = 15;

/// One element of `Sec-WebSocket-Extensions`: an extension token and its parameters in the
/// order sent, values unquoted (`None`: a parameter without a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub name: String,
    pub params: Vec<(String, Option<String>)>,
}

/// A `Sec-WebSocket-Extensions` value that does not follow RFC 6455 §9.1's grammar.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed Sec-WebSocket-Extensions at byte {at}: {what}")]
pub struct SyntaxError {
    pub at: usize,
    pub what: &'static str,
}

/// Parses a `Sec-WebSocket-Extensions` value (several header lines joined with `,`): a list of
/// `token *( ";" token [ "=" ( token / quoted-string ) ] )`, whitespace allowed around the
/// separators and empty list elements skipped (RFC 6455 §9.1, with RFC 2616's `#rule`). A
/// quoted value must unquote to a token (§9.1). Any other byte is a [`SyntaxError`].
pub fn parse_offers(header: &str) -> Result<Vec<Offer>, SyntaxError> {
    let mut p = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut offers = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            None => return Ok(offers),
            Some(b',') => {
                p.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = p.token("an extension name")?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            match p.peek() {
                None | Some(b',') => break,
                Some(b';') => p.i += 1,
                Some(_) => return Err(p.error("`;` or `,` after an extension or parameter")),
            }
            p.skip_ws();
            let key = p.token("a parameter name")?;
            p.skip_ws();
            let value = if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip_ws();
                Some(if p.peek() == Some(b'"') {
                    p.quoted()?
                } else {
                    p.token("a parameter value")?
                })
            } else {
                None
            };
            params.push((key, value));
        }
        offers.push(Offer { name, params });
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn error(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.i, what }
    }

    fn token(&mut self, what: &'static str) -> Result<String, SyntaxError> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error(what));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted-string (RFC 2616 §2.2) whose content must be a token once unescaped.
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let open = self.i;
        self.i += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(SyntaxError {
                        at: open,
                        what: "an unterminated quoted-string",
                    });
                }
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(c) = self.peek() else {
                        return Err(self.error("a character after `\\`"));
                    };
                    value.push(c);
                    self.i += 1;
                }
                Some(c) => {
                    value.push(c);
                    self.i += 1;
                }
            }
        }
        if value.is_empty() || !value.iter().all(|&c| is_tchar(c)) {
            return Err(SyntaxError {
                at: open,
                what: "a quoted value that is not a token",
            });
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

/// RFC 2616 §2.2 `token` characters: visible ASCII except separators.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&c)
}

/// Why a `permessage-deflate` offer is declined (RFC 7692 §7.1: a server MUST decline an
/// offer with an unknown parameter, an invalid value or a parameter twice, and declines one
/// it cannot honour).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Decline {
    #[error("not permessage-deflate")]
    OtherExtension,
    #[error("unknown parameter {0}")]
    UnknownParam(String),
    #[error("parameter {0} given twice")]
    Duplicate(String),
    #[error("invalid value for {0}")]
    BadValue(String),
    /// §7.1.2.1: Starling compresses each pushed message once for every receiver, with the
    /// full 32 KiB window, so it cannot promise a smaller one.
    #[error("server_max_window_bits={0} is below the {MAX_WINDOW_BITS} bits Starling uses")]
    ServerWindow(u8),
}

/// The configuration the server accepted: what goes in the 101 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The client offered `server_max_window_bits=15`: accepting it means answering it
    /// (§7.1.2.1).
    pub server_max_window_bits: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` response value. Both no-context-takeover parameters,
    /// always: no compressor or inflater state outlives a message on either side.
    pub fn response(&self) -> String {
        let mut v = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.server_max_window_bits {
            v.push_str("; server_max_window_bits=15");
        }
        v
    }
}

/// Judges one offer (RFC 7692 §7.1): the four parameters of §7.1.1–§7.1.2, each at most once,
/// `*_no_context_takeover` without a value, `server_max_window_bits` 8–15 (only 15 can be
/// honoured), `client_max_window_bits` without a value or 8–15 (any is fine: the inflater
/// always has the full window).
pub fn judge(offer: &Offer) -> Result<Agreed, Decline> {
    if !offer.name.eq_ignore_ascii_case(NAME) {
        return Err(Decline::OtherExtension);
    }
    let mut seen: Vec<&str> = Vec::with_capacity(4);
    let mut agreed = Agreed {
        server_max_window_bits: false,
    };
    for (key, value) in &offer.params {
        let known = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ];
        let Some(&name) = known.iter().find(|k| key.eq_ignore_ascii_case(k)) else {
            return Err(Decline::UnknownParam(key.clone()));
        };
        if seen.contains(&name) {
            return Err(Decline::Duplicate(name.into()));
        }
        seen.push(name);
        let bad = || Decline::BadValue(name.into());
        match (name, value.as_deref()) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_no_context_takeover" | "client_no_context_takeover", Some(_)) => {
                return Err(bad());
            }
            ("client_max_window_bits", None) => {}
            (_, None) => return Err(bad()),
            (_, Some(v)) => {
                let bits = window_bits(v).ok_or_else(bad)?;
                if name == "server_max_window_bits" {
                    if bits < MAX_WINDOW_BITS {
                        return Err(Decline::ServerWindow(bits));
                    }
                    agreed.server_max_window_bits = true;
                }
            }
        }
    }
    Ok(agreed)
}

/// RFC 7692 §7.1.2: a decimal 8–15 with no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The first acceptable `permessage-deflate` offer (RFC 7692 §7.1: offers are in the
/// client's order of preference), or `None`: then no extension is answered.
pub fn negotiate(offers: &[Offer]) -> Option<Agreed> {
    offers.iter().find_map(|o| judge(o).ok())
}

/// Compresses whole messages for a peer that takes no context over (`server_no_context_takeover`
/// or its client-side twin): each call starts from an empty window. Raw deflate, 32 KiB window.
pub struct Deflater {
    c: Compress,
}

impl Deflater {
    /// `level`: 0 (store) to 9 (best).
    pub fn new(level: u32) -> Self {
        Deflater {
            c: Compress::new(Compression::new(level.min(9)), false),
        }
    }

    /// Appends the compressed payload of `message` to `out`: a sync flush with its
    /// `00 00 ff ff` tail removed (RFC 7692 §7.2.1). An empty message gives the single byte
    /// `00` (§7.2.3.6).
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        self.compress_parts(&[message], out);
    }

    /// [`Deflater::compress`] of the message made of `parts` one after the other (a goim
    /// header and a shared body, say), without joining them first.
    pub fn compress_parts(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) {
        self.c.reset();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        out.reserve(total / 2 + 64);
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let flush = if last {
                FlushCompress::Sync
            } else {
                FlushCompress::None
            };
            let start_in = self.c.total_in();
            loop {
                let used = (self.c.total_in() - start_in) as usize;
                self.c
                    .compress_vec(&part[used..], out, flush)
                    .expect("deflate of an in-memory buffer");
                let used = (self.c.total_in() - start_in) as usize;
                // A part is done once it is all in and the output was not cut short (for the
                // last one: the flush is complete).
                if used == part.len() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity().max(256));
            }
        }
        if parts.is_empty() {
            self.c
                .compress_vec(&[], out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
        }
        debug_assert!(
            out.ends_with(&TAIL),
            "a sync flush ends with an empty block"
        );
        out.truncate(out.len() - TAIL.len());
    }
}

/// A compressed message that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InflateError {
    /// It inflates to more than the limit (a decompression bomb, or just too big): the
    /// inflater stops at the limit, so memory stays bounded.
    #[error("inflates to more than {max} bytes")]
    TooLarge { max: usize },
    #[error("not valid deflate data")]
    Corrupt,
}

/// Inflates whole messages from a peer that takes no context over (Starling always answers
/// `client_no_context_takeover`): each call starts afresh. Raw deflate, 32 KiB window, which
/// reads data compressed with any smaller window.
pub struct Inflater {
    d: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Inflater {
            d: Decompress::new(false),
        }
    }

    /// Appends the inflated `payload` (a message's payload as received, RSV1 set) to `out`,
    /// at most `max` bytes; more is [`InflateError::TooLarge`] (RFC 7692 §7.2.2: the tail is
    /// appended before inflating; a block with BFINAL set ends the message).
    pub fn inflate(
        &mut self,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        const STEP: usize = 16 * 1024;
        self.d.reset(false);
        let base = out.len();
        // One byte past the limit tells "exactly max" from "more than max".
        let limit = max.saturating_add(1);
        for (input, flush) in [
            (payload, FlushDecompress::None),
            (&TAIL[..], FlushDecompress::Sync),
        ] {
            let start_in = self.d.total_in();
            loop {
                let used = (self.d.total_in() - start_in) as usize;
                let produced = out.len() - base;
                if produced >= limit {
                    out.truncate(base + max);
                    return Err(InflateError::TooLarge { max });
                }
                // Output room grows by steps, never past the limit: a bomb stops there.
                let room = (limit - produced).min(STEP.max(input.len().saturating_mul(4)));
                let at = out.len();
                out.resize(at + room, 0);
                let before_out = self.d.total_out();
                let status = self.d.decompress(&input[used..], &mut out[at..], flush);
                let wrote = (self.d.total_out() - before_out) as usize;
                out.truncate(at + wrote);
                let Ok(status) = status else {
                    return Self::corrupt(base, max, out);
                };
                let now_used = (self.d.total_in() - start_in) as usize;
                if status == Status::StreamEnd {
                    // BFINAL: the message ends here; what follows is ignored.
                    return Self::check(base, max, out);
                }
                if now_used == input.len() && wrote < room {
                    break;
                }
                if now_used == used && wrote == 0 {
                    // No progress with input and room left: truncated or invalid.
                    return Self::corrupt(base, max, out);
                }
            }
        }
        Self::check(base, max, out)
    }

    /// Invalid data, unless what came before it already inflated past the limit: then the
    /// message is [`InflateError::TooLarge`] (an inflater that stops at the limit never reads
    /// the bad bytes), and `out` is cut back to the limit either way.
    fn corrupt(base: usize, max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        Self::check(base, max, out)?;
        Err(InflateError::Corrupt)
    }

    fn check(base: usize, max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        if out.len() - base > max {
            out.truncate(base + max);
            return Err(InflateError::TooLarge { max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

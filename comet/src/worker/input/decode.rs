//! From bytes to packets: the goim stream on TCP, WebSocket frames (then one packet per
//! message) after an upgrade, and the upgrade request itself.

use super::{Step, frame_reason, packet_reason};
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Phase, Wire};
use crate::worker::Worker;
use starling_proto::packet;
use starling_proto::ws::deflate::{self, InflateError};
use starling_proto::ws::{self, Assembler, Message};
use std::sync::atomic::Ordering::Relaxed;
use tracing::debug;

impl Worker {
    /// Handles plaintext bytes from the client, keeping an incomplete tail for next time.
    /// While logic answers (auth, or a forward-and-answer op) bytes that still arrive (TLS
    /// records read with a handshake, say) are only kept: packets are handled in order once
    /// logic has answered.
    pub(super) fn ingest(&self, id: ConnId, data: &mut [u8]) -> Result<Step, CloseReason> {
        let mut buf = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(id) else {
                return Ok(Step::Closed);
            };
            let mut buf = c.inbuf.take().map(|b| *b).unwrap_or_default();
            if c.phase.paused() {
                buf.extend_from_slice(data);
                c.inbuf = (!buf.is_empty()).then(|| Box::new(buf));
                return Ok(Step::Continue);
            }
            buf
        };
        let from_buf = !buf.is_empty();
        let input: &mut [u8] = if from_buf {
            buf.extend_from_slice(data);
            &mut buf
        } else {
            data
        };
        let (used, step) = self.process(id, input)?;
        let tail = if from_buf {
            buf.drain(..used);
            buf
        } else {
            input[used..].to_vec()
        };
        if let Some(conn) = self.conns.borrow_mut().get_mut(id) {
            conn.inbuf = (!tail.is_empty()).then(|| Box::new(tail));
        }
        Ok(step)
    }

    /// Decodes and handles what `input` holds; returns the bytes used. A packet (TCP) or
    /// message (WebSocket) over the connection's limit closes it: goim's 4096-byte body until
    /// auth, then `ConnectReply.max_body` for the whole packet when logic set one.
    pub(super) fn process(
        &self,
        id: ConnId,
        input: &mut [u8],
    ) -> Result<(usize, Step), CloseReason> {
        let (is_ws, upgrading, max_pack, mut deflating) = match self.conns.borrow().get(id) {
            Some(c) => (
                c.is_ws(),
                matches!(c.phase, Phase::Upgrading),
                c.transport.max_pack(),
                c.deflating(),
            ),
            None => return Ok((0, Step::Closed)),
        };
        if !is_ws {
            let max_body = max_pack - packet::HEADER_LEN;
            let mut pos = 0;
            while pos < input.len() {
                let p = match packet::decode(&input[pos..], max_body) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "bad packet");
                        return Err(packet_reason(e));
                    }
                };
                pos += p.wire_len();
                match self.on_packet(id, p)? {
                    Step::Continue => {}
                    step => return Ok((pos, step)),
                }
            }
            return Ok((pos, Step::Continue));
        }
        let mut pos = 0;
        if upgrading {
            let Some(up) = ws::parse_upgrade(input).map_err(|e| {
                debug!(error = %e, "bad upgrade");
                self.reply(id, &e.response(), Wire::Http).ok();
                CloseReason::BadUpgrade
            })?
            else {
                return Ok((0, Step::Continue));
            };
            if up.path != "/sub" {
                debug!(path = %up.path, "upgrade on a path other than /sub");
                self.reply(id, &ws::http_error(404, "Not Found"), Wire::Http)
                    .ok();
                return Err(CloseReason::BadUpgrade);
            }
            let agreed = self.negotiate_deflate(id, &up.extensions)?;
            let answer = agreed.map(|a| a.response());
            self.reply(
                id,
                &ws::switching_protocols_with(&up.key, answer.as_deref()),
                Wire::Http,
            )?;
            if let Some(c) = self.conns.borrow_mut().get_mut(id) {
                c.phase = Phase::Authing;
                if let Some(ws) = c.transport.ws_mut() {
                    ws.cookie = up.cookie.into();
                    if agreed.is_some() {
                        ws.deflate = true;
                        deflating = true;
                        self.stats().deflate.negotiated.fetch_add(1, Relaxed);
                    }
                }
            }
            pos = up.consumed;
        }
        let mut asm = match self.conns.borrow_mut().get_mut(id) {
            Some(c) => match c.transport.ws_mut() {
                Some(ws) => std::mem::replace(&mut ws.asm, Assembler::new(packet::MAX_PACK)),
                None => unreachable!("checked above"),
            },
            None => return Ok((0, Step::Closed)),
        };
        let result = self.process_frames(id, &mut input[pos..], &mut asm, max_pack, deflating);
        asm.release();
        if let Some(ws) = self
            .conns
            .borrow_mut()
            .get_mut(id)
            .and_then(|c| c.transport.ws_mut())
        {
            ws.asm = asm;
        }
        result.map(|(used, step)| (pos + used, step))
    }

    pub(super) fn process_frames(
        &self,
        id: ConnId,
        input: &mut [u8],
        asm: &mut Assembler,
        max_pack: usize,
        deflating: bool,
    ) -> Result<(usize, Step), CloseReason> {
        let masking = if self.shared.config.websocket.require_mask {
            ws::Masking::Required
        } else {
            ws::Masking::Optional
        };
        let mut pos = 0;
        loop {
            let head = match ws::decode_frame_ext(&mut input[pos..], max_pack, masking, deflating) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok((pos, Step::Continue)),
                Err(e) => {
                    debug!(error = %e, "bad websocket frame");
                    return Err(frame_reason(e));
                }
            };
            let payload = &input[pos + head.header_len..pos + head.frame_len()];
            pos += head.frame_len();
            let step = match asm.push(&head, payload).map_err(frame_reason)? {
                None | Some(Message::Pong) => Step::Continue,
                Some(Message::Ping(p)) => {
                    let pass = match self.conns.borrow_mut().get_mut(id) {
                        Some(c) => self.meter(c)?,
                        None => return Ok((pos, Step::Closed)),
                    };
                    if pass {
                        self.reply(id, p, Wire::Control(ws::Opcode::Pong))?;
                    }
                    Step::Continue
                }
                Some(Message::Close(p)) => {
                    let code = p.get(..2).unwrap_or(&[]);
                    self.reply(id, code, Wire::Control(ws::Opcode::Close)).ok();
                    return Err(CloseReason::ClientClosed);
                }
                Some(Message::Data(msg)) => self.on_message(id, msg, max_pack)?,
                Some(Message::Compressed(z)) => {
                    // No context takeover: each message inflates on its own, at most the
                    // connection's packet limit (a bomb stops there).
                    let mut msg = Vec::new();
                    deflate_in(z, max_pack, &mut msg)?;
                    self.stats().deflate.add_in(z.len(), msg.len());
                    self.on_message(id, &msg, max_pack)?
                }
            };
            if !matches!(step, Step::Continue) {
                return Ok((pos, step));
            }
        }
    }

    /// One WebSocket message: exactly one goim packet.
    fn on_message(&self, id: ConnId, msg: &[u8], max_pack: usize) -> Result<Step, CloseReason> {
        let p = packet::decode_exact(msg, max_pack - packet::HEADER_LEN).map_err(|e| {
            debug!(error = %e, "bad packet in websocket message");
            packet_reason(e)
        })?;
        self.on_packet(id, p)
    }

    /// permessage-deflate's negotiation (RFC 7692 §7.1), when comet is configured for it:
    /// the first acceptable offer, or none. A `Sec-WebSocket-Extensions` header that does not
    /// parse is a bad handshake (RFC 6455 §4.2.1): 400 and `bad_upgrade`. When deflate is
    /// off the header is not read, as goim.
    fn negotiate_deflate(
        &self,
        id: ConnId,
        header: &str,
    ) -> Result<Option<deflate::Agreed>, CloseReason> {
        if !self.shared.config.websocket.permessage_deflate || header.is_empty() {
            return Ok(None);
        }
        match deflate::parse_offers(header) {
            Ok(offers) => {
                let agreed = deflate::negotiate(&offers);
                if agreed.is_none() {
                    debug!(offers = header, "no acceptable permessage-deflate offer");
                }
                Ok(agreed)
            }
            Err(e) => {
                debug!(error = %e, "bad upgrade");
                self.reply(id, &ws::http_error(400, "Bad Request"), Wire::Http)
                    .ok();
                Err(CloseReason::BadUpgrade)
            }
        }
    }
}

/// Inflates a compressed message: over the limit is `frame_too_large` (RFC 6455's 1009, the
/// same as an uncompressed message over it), invalid deflate data is `bad_frame`.
fn deflate_in(z: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), CloseReason> {
    crate::deflate::inflate(z, max, out).map_err(|e| {
        debug!(error = %e, "bad compressed websocket message");
        match e {
            InflateError::TooLarge { .. } => CloseReason::FrameTooLarge,
            InflateError::Corrupt => CloseReason::BadFrame,
        }
    })
}

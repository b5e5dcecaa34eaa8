//! From bytes to packets: the goim stream on TCP, WebSocket frames (then one packet per
//! message) after an upgrade, and the upgrade request itself.

use super::{Step, frame_reason, packet_reason};
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Phase, Wire};
use crate::worker::Worker;
use starling_proto::packet;
use starling_proto::ws::{self, Assembler, Message};
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
        let (is_ws, upgrading, max_pack) = match self.conns.borrow().get(id) {
            Some(c) => (
                c.is_ws(),
                matches!(c.phase, Phase::Upgrading),
                c.transport.max_pack(),
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
            self.reply(id, &ws::switching_protocols(&up.key), Wire::Http)?;
            if let Some(c) = self.conns.borrow_mut().get_mut(id) {
                c.phase = Phase::Authing;
                if let Some(ws) = c.transport.ws_mut() {
                    ws.cookie = up.cookie.into();
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
        let result = self.process_frames(id, &mut input[pos..], &mut asm, max_pack);
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
    ) -> Result<(usize, Step), CloseReason> {
        let masking = if self.shared.config.websocket.require_mask {
            ws::Masking::Required
        } else {
            ws::Masking::Optional
        };
        let mut pos = 0;
        loop {
            let head = match ws::decode_frame(&mut input[pos..], max_pack, masking) {
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
                    self.reply(id, p, Wire::Control(ws::Opcode::Pong))?;
                    Step::Continue
                }
                Some(Message::Close(p)) => {
                    let code = p.get(..2).unwrap_or(&[]);
                    self.reply(id, code, Wire::Control(ws::Opcode::Close)).ok();
                    return Err(CloseReason::ClientClosed);
                }
                Some(Message::Data(msg)) => {
                    let p =
                        packet::decode_exact(msg, max_pack - packet::HEADER_LEN).map_err(|e| {
                            debug!(error = %e, "bad packet in websocket message");
                            packet_reason(e)
                        })?;
                    self.on_packet(id, p)?
                }
            };
            if !matches!(step, Step::Continue) {
                return Ok((pos, step));
            }
        }
    }
}

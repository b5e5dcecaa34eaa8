//! The per-op table: what a client packet after auth gets.
//!
//! - goim's reply rules for ops 2, 12, 14 and 16 (reference goim.md §1.2–1.3);
//! - goim's echo-and-forward for every other op of a goim connection: the packet goes to
//!   logic's `Receive` (its answer dropped) and the client gets the same op with an empty
//!   body at once;
//! - forward-and-answer for the requests of [`op::ANSWERED`] (its even ops) on a connection
//!   that opted in (`ConnectReply.im`): the packet goes to logic, the connection's input
//!   pauses, and logic's answer (zero or more packets) is written back with the request's
//!   `seq`;
//! - on a connection that opted in, ops only the server sends ([`op::im::server_only`]: the
//!   replies 21 … 39 and the pushes 40–45) close it as `bad_op`: goim's empty echo of op 41
//!   or 45 would read as a push or a kick, and a reply op would be answered on op + 1.
//!
//! Auth (op 7) is handled before: it is the first packet, and after auth op 7 is echoed and
//! forwarded like any other, as goim does.

use starling_proto::op::{self, Codec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// op 2: reply op 3 with the room's online count.
    Heartbeat,
    /// op 12: change room, reply op 13 with the body.
    ChangeRoom,
    /// ops 14 and 16: change the accepted ops, reply op + 1 with the body.
    Accepts,
    /// goim's default branch.
    EchoAndForward,
    /// Starling: logic answers, with this codec for comet's own error replies.
    ForwardAndAnswer(Codec),
    /// Starling: an op only the server sends, from a connection that opted in: closed.
    ServerOnly,
}

/// The rule for `op` on a connection whose opt-in is `im`.
pub(crate) fn rule(op: i32, im: Option<Codec>) -> Rule {
    match (op, im) {
        (op::HEARTBEAT, _) => Rule::Heartbeat,
        (op::CHANGE_ROOM, _) => Rule::ChangeRoom,
        (op::SUB | op::UNSUB, _) => Rule::Accepts,
        (o, Some(_)) if op::im::server_only(o) => Rule::ServerOnly,
        (o, Some(codec)) if op::ANSWERED.contains(&o) => Rule::ForwardAndAnswer(codec),
        _ => Rule::EchoAndForward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goim_connections_get_goim_rules_for_every_op() {
        for o in [0, 1, 4, 5, 7, 9, 18, 20, 39, 40, 41, 45, 1000, -1] {
            assert_eq!(rule(o, None), Rule::EchoAndForward, "op {o}");
        }
        assert_eq!(rule(2, None), Rule::Heartbeat);
        assert_eq!(rule(12, None), Rule::ChangeRoom);
        assert_eq!(rule(14, None), Rule::Accepts);
        assert_eq!(rule(16, None), Rule::Accepts);
    }

    #[test]
    fn opted_in_connections_get_answers_for_answered_ops_only() {
        let im = Some(Codec::Json);
        assert_eq!(rule(20, im), Rule::ForwardAndAnswer(Codec::Json));
        assert_eq!(rule(38, im), Rule::ForwardAndAnswer(Codec::Json));
        for o in (21..=39).step_by(2) {
            assert_eq!(rule(o, im), Rule::ServerOnly, "reply op {o}");
        }
        for o in [4, 7, 19, 46, 1000] {
            assert_eq!(rule(o, im), Rule::EchoAndForward, "op {o}");
        }
        for o in 40..=45 {
            assert_eq!(rule(o, im), Rule::ServerOnly, "op {o}");
        }
        assert_eq!(rule(2, im), Rule::Heartbeat);
    }
}

//! goim's operation codes (`api/protocol/operation.go`). Business ops conventionally start at 1000.

/// Unused in goim v2 (its RSA/AES handshake was never built).
pub const HANDSHAKE: i32 = 0;
pub const HANDSHAKE_REPLY: i32 = 1;
/// Client heartbeat; answered with [`HEARTBEAT_REPLY`] carrying the room's online count.
pub const HEARTBEAT: i32 = 2;
pub const HEARTBEAT_REPLY: i32 = 3;
/// Client message; goim hands it to logic's `Receive` and echoes it with an empty body.
pub const SEND_MSG: i32 = 4;
pub const SEND_MSG_REPLY: i32 = 5;
pub const DISCONNECT_REPLY: i32 = 6;
/// First op a client must send; its body is the JSON token.
pub const AUTH: i32 = 7;
pub const AUTH_REPLY: i32 = 8;
/// Server push container: the body is one or more whole packets back to back.
pub const RAW: i32 = 9;
/// Internal sentinels in goim's comet; never on the wire.
pub const PROTO_READY: i32 = 10;
pub const PROTO_FINISH: i32 = 11;
/// Body is the new room id (`type://id`); empty leaves the room.
pub const CHANGE_ROOM: i32 = 12;
pub const CHANGE_ROOM_REPLY: i32 = 13;
/// Body is a comma-separated list of ops to accept for key, mid and broadcast pushes.
pub const SUB: i32 = 14;
pub const SUB_REPLY: i32 = 15;
pub const UNSUB: i32 = 16;
pub const UNSUB_REPLY: i32 = 17;

/// Starling: ops a connection that opted in (`ConnectReply.im` ≠ 0) sends to logic and gets
/// logic's answer to (`ReceiveReply.replies`) instead of goim's empty echo. The IM requests of
/// the design (reference im.md §5.2: 20 send … 34 members, 36–39 reserved); their replies are
/// op + 1. Outside an opted-in connection these ops take goim's default branch.
pub const ANSWERED: std::ops::RangeInclusive<i32> = 20..=39;

/// Starling's IM ops (reference im.md §5.2). Requests are even, their reply is op + 1;
/// [`IM_MSG`], [`IM_EVENT`] and [`IM_KICK`] are server pushes. Bodies: [`crate::im::v1`].
pub mod im {
    /// `SendReq` → `SendAck`.
    pub const SEND: i32 = 20;
    pub const SEND_ACK: i32 = 21;
    /// `SyncReq` → `SyncReply`: the conversation directory.
    pub const SYNC: i32 = 22;
    pub const SYNC_REPLY: i32 = 23;
    /// `PullReq` → `PullReply`: offline messages (forward) and history (backward).
    pub const PULL: i32 = 24;
    pub const PULL_REPLY: i32 = 25;
    /// `RecallReq` → `SendAck` of the recall event.
    pub const RECALL: i32 = 26;
    pub const RECALL_ACK: i32 = 27;
    /// `MarkReq` → `Result`: read up to a seq.
    pub const READ: i32 = 28;
    pub const READ_REPLY: i32 = 29;
    /// `MarkReq` → `Result`: delivered up to a seq.
    pub const RECV: i32 = 30;
    pub const RECV_REPLY: i32 = 31;
    /// `TypingReq` → `Result`.
    pub const TYPING: i32 = 32;
    pub const TYPING_REPLY: i32 = 33;
    /// `MembersReq` → `MembersReply`.
    pub const MEMBERS: i32 = 34;
    pub const MEMBERS_REPLY: i32 = 35;
    /// Push: `Push`, new sequenced messages.
    pub const MSG: i32 = 41;
    /// Push: `Event` (read, delivered, typing, conversation added or removed).
    pub const EVENT: i32 = 43;
    /// Push: `Kick`; comet closes the connection once the packet is written.
    pub const KICK: i32 = 45;
    /// The pushes an opted-in connection accepts on top of its own `accepts`.
    pub const PUSHES: [i32; 3] = [MSG, EVENT, KICK];
    /// IM's server-to-client range (im.md §5.2: 41, 43 and 45, and the unassigned 40, 42
    /// and 44). An opted-in connection that sends one is closed (comet's `bad_op`): goim's
    /// empty echo would come back as a push, an empty op 45 as a kick.
    pub const SERVER_OPS: std::ops::RangeInclusive<i32> = 40..=45;

    /// Whether only the server sends `op` on an opted-in connection: the pushes
    /// ([`SERVER_OPS`]) and the replies of [`super::ANSWERED`] (its odd ops, 21 … 39).
    /// Forwarded, a reply op would be answered on op + 1, an even op: a request's number
    /// (21 came back as 22, `IM_SYNC`), or 40 for 39.
    pub fn server_only(op: i32) -> bool {
        SERVER_OPS.contains(&op) || (super::ANSWERED.contains(&op) && op % 2 == 1)
    }
}

/// The codec an opted-in connection's answered ops use (`ConnectReply.im`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Protobuf = 1,
    Json = 2,
}

impl Codec {
    /// `ConnectReply.im`: 0 (goim only) and unknown values are `None`.
    pub fn from_im(im: i32) -> Option<Codec> {
        match im {
            1 => Some(Codec::Protobuf),
            2 => Some(Codec::Json),
            _ => None,
        }
    }

    /// The body of a reply carrying only `int32 code = 1`, which every answered op's reply
    /// message starts with (reference im.md §5.2, §7.1), so comet can answer for logic
    /// (504 when logic is too slow, 503 when it failed) without knowing the schema:
    /// protobuf `08 <varint code>`, JSON `{"code":N}`.
    pub fn code_body(self, code: u32) -> Vec<u8> {
        match self {
            Codec::Json => format!("{{\"code\":{code}}}").into_bytes(),
            Codec::Protobuf => {
                let mut b = vec![0x08]; // field 1, varint
                prost::encoding::encode_varint(u64::from(code), &mut b);
                b
            }
        }
    }
}

/// Parses goim's op list (`"1000,1001"`). Like goim, a list with a bad entry is ignored whole.
pub fn parse_op_list(body: &[u8]) -> Option<Vec<i32>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.trim().is_empty() {
        return Some(Vec::new());
    }
    text.split(',').map(|s| s.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_lists_parse_like_goim() {
        assert_eq!(parse_op_list(b"1000,1001"), Some(vec![1000, 1001]));
        assert_eq!(parse_op_list(b" 7 "), Some(vec![7]));
        assert_eq!(parse_op_list(b""), Some(vec![]));
        assert_eq!(parse_op_list(b"1000,x"), None);
        assert_eq!(parse_op_list(&[0xff]), None);
    }

    #[test]
    fn code_bodies_match_the_design() {
        // reference im.md §7.1: pb `08 F8 03` for 504, JSON `{"code":504}`.
        assert_eq!(Codec::Protobuf.code_body(504), vec![0x08, 0xF8, 0x03]);
        assert_eq!(Codec::Protobuf.code_body(5), vec![0x08, 0x05]);
        assert_eq!(Codec::Json.code_body(503), br#"{"code":503}"#.to_vec());
        assert_eq!(Codec::from_im(0), None);
        assert_eq!(Codec::from_im(2), Some(Codec::Json));
    }
}

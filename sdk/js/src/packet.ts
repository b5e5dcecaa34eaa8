// goim's packet (README "An IM client, on the wire"; goim api/protocol/protocol.go): a 16-byte
// big-endian header, then the body. On WebSocket one packet per binary message; server pushes
// arrive inside op 9 (OpRaw) packets whose body is packets back to back.

/** Header length in bytes: packLen u32, headerLen u16, ver u16, op u32, seq u32. */
export const HEADER_LEN = 16;
/** goim's protocol version. */
export const VERSION = 1;

/** goim's op codes (api/protocol/operation.go) and IM's (reference im.md §5.2). */
export const Op = {
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  IM_SEND: 20,
  IM_SEND_ACK: 21,
  IM_SYNC: 22,
  IM_SYNC_REPLY: 23,
  IM_PULL: 24,
  IM_PULL_REPLY: 25,
  IM_RECALL: 26,
  IM_RECALL_ACK: 27,
  IM_READ: 28,
  IM_READ_REPLY: 29,
  IM_RECV: 30,
  IM_RECV_REPLY: 31,
  IM_TYPING: 32,
  IM_TYPING_REPLY: 33,
  IM_MEMBERS: 34,
  IM_MEMBERS_REPLY: 35,
  IM_MSG: 41,
  IM_EVENT: 43,
  IM_KICK: 45,
} as const;

export interface Packet {
  ver: number;
  op: number;
  seq: number;
  body: Uint8Array;
}

/** Thrown for bytes that are not goim packets; the connection is then closed. */
export class PacketError extends Error {}

/** One packet: header + body. `seq` is taken modulo 2^32 (goim's header seq is int32). */
export function encodePacket(op: number, seq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length);
  v.setUint16(4, HEADER_LEN);
  v.setUint16(6, VERSION);
  v.setUint32(8, op >>> 0);
  v.setUint32(12, seq >>> 0);
  out.set(body, HEADER_LEN);
  return out;
}

/**
 * The packets of one WebSocket message: the packet itself, or for op 9 the packets of its
 * body (back to back, each with its own header; an op 9 inside is unwrapped too). Throws
 * PacketError on a length that does not fit (a header under 16 bytes, a packLen past the end).
 */
export function decodeMessage(bytes: Uint8Array): Packet[] {
  const out: Packet[] = [];
  splitInto(bytes, out);
  return out;
}

function splitInto(bytes: Uint8Array, out: Packet[]): void {
  let off = 0;
  while (off < bytes.length) {
    if (bytes.length - off < HEADER_LEN) {
      throw new PacketError(`short packet: ${bytes.length - off} bytes`);
    }
    const v = new DataView(bytes.buffer, bytes.byteOffset + off, bytes.length - off);
    const packLen = v.getUint32(0);
    const headerLen = v.getUint16(4);
    if (headerLen < HEADER_LEN || packLen < headerLen || packLen > bytes.length - off) {
      throw new PacketError(`bad lengths: packLen ${packLen}, headerLen ${headerLen}`);
    }
    const p: Packet = {
      ver: v.getUint16(6),
      op: v.getUint32(8),
      seq: v.getUint32(12),
      body: bytes.subarray(off + headerLen, off + packLen),
    };
    if (p.op === Op.RAW) {
      splitInto(p.body, out);
    } else {
      out.push(p);
    }
    off += packLen;
  }
}

// @starling-im/client: Starling's IM client SDK (reference im.md §5.4) over goim's WebSocket
// with the JSON codec, for browsers and Node 20. Zero runtime dependencies.
//
// Layout: client.ts (StarlingClient: connect loop, sync, pulls, send, events), conv.ts (one
// conversation's receive rule), marks.ts (read/delivered coalescing), connection.ts (one
// WebSocket: auth, heartbeat, request/reply), packet.ts (goim's 16-byte header, op 9),
// wire.ts (JSON bodies), nodes.ts (/goim/nodes/weighted), types.ts (public types).

export { StarlingClient, uuid } from "./client.js";
export type { ClientOptions, ClientEvents } from "./client.js";
export { ImError, convKey } from "./types.js";
export type { ConvKind, ConvRef, Message, Conversation, ConnectionState, SendResult } from "./types.js";
export { Op, encodePacket, decodeMessage as decodePackets, HEADER_LEN } from "./packet.js";
export type { Packet } from "./packet.js";
export { pickNodes } from "./nodes.js";

// @starling-im/client: Starling's IM client SDK (reference im.md §5.4) over goim's WebSocket
// with the JSON codec, for browsers and Node 20. Zero runtime dependencies.
//
// Layout: client.ts (StarlingClient: connect loop, sync, pulls, send, events), options.ts
// (ClientOptions, ClientEvents), emitter.ts (typed on/emit), conv.ts (one
// conversation's receive rule), marks.ts (read/delivered coalescing), connection.ts (one
// WebSocket: auth, heartbeat, request/reply), packet.ts (goim's 16-byte header, op 9),
// wire.ts (JSON bodies), nodes.ts (/goim/nodes/weighted), types.ts (public types).

export { StarlingClient } from "./client.js";
export { uuid } from "./options.js";
export type { ClientOptions, ClientEvents } from "./options.js";
export { ImError, convKey } from "./types.js";
export type { ConvKind, ConvRef, Message, Conversation, ConnectionState, SendResult } from "./types.js";
export { Op, encodePacket, decodeMessage as decodePackets, HEADER_LEN } from "./packet.js";
export type { Packet } from "./packet.js";
export { pickNodes } from "./nodes.js";

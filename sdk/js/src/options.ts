// The options and events of StarlingClient (the public API agreed in ts-api.md; additions are
// marked as such in sdk/js/README.md), and the UUIDs that name sends.

import type { ConnectionState, ConvRef, Conversation, Message } from "./types.js";

export interface ClientOptions {
  /** ws://host:3102/sub; several are tried in order, round robin on reconnect. */
  url?: string | string[];
  /** http://host:3111: GET /goim/nodes/weighted?platform=web picks the comets first. */
  nodesUrl?: string;
  /** The user id (goim mid), decimal string. */
  mid: string;
  /** Device id, stable across reconnects (multi-device policy, im.md §7.6, uses it). */
  key: string;
  /** e.g. "web" (at most 12 bytes). */
  platform: string;
  /** HS256 JWT (POST /im/v1/tokens); a function is called before every connect. */
  imToken?: string | (() => Promise<string>);
  /** goim room, e.g. "live://1000". */
  roomId?: string;
  /** goim business ops this connection accepts (≥ 1000). */
  accepts?: number[];
  /** WebSocket constructor: browsers default to the global; Node 20 passes the `ws` package's. */
  WebSocket?: unknown;
  /** Reconnect delay: full jitter over min(maxMs, minMs × 2^attempt). Defaults 500 / 30000 ms. */
  reconnect?: { minMs?: number; maxMs?: number };
  /** Per attempt, before resending the same clientMsgId (default 5000 ms). */
  sendTimeoutMs?: number;
  /**
   * Pause before resending a send or recall (timeout, lost connection, 429/500/503/504): the
   * answer's retryAfterMs, plus full jitter over min(maxMs, minMs × 2^attempt). Defaults 100 /
   * 30000 ms: after an outage every client has a send to retry, and a ceiling of a few
   * seconds kept a 10,000-client deployment overloaded by retries alone (bench/RESULTS.md,
   * "Soak").
   */
  sendRetry?: { minMs?: number; maxMs?: number };
  /** goim heartbeat (op 2) period; default 30000 ms, or less when /goim/nodes advertises less. */
  heartbeatMs?: number;
  /** Other requests (sync, pull, members): past this the connection is dropped (default 10000 ms). */
  requestTimeoutMs?: number;
  /** WebSocket handshake + auth reply deadline per attempt (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Send IM_RECV (delivered up to contig) by itself, at most once per second per conversation (default true). */
  autoDelivered?: boolean;
  /** Messages per page of the first pull of a conversation (newest first; default 50). */
  initialPage?: number;
  /**
   * Test hooks, not for applications: `dropPush` true loses that pushed message (a lossy path);
   * `repeatPush` true delivers it twice; `dropAfterSend` true closes the connection right
   * after an IM_SEND was written, before its ack (a connection lost mid-send).
   */
  testHooks?: {
    dropPush?: (m: Message) => boolean;
    repeatPush?: (m: Message) => boolean;
    dropAfterSend?: (clientMsgId: string) => boolean;
  };
}

/** Every event and its argument. */
export interface ClientEvents {
  state: ConnectionState;
  /** Each (conv, seq) once, in seq order per conversation; includes RECALL events (kind "RECALL"). */
  message: Message;
  /** The target of a recall, now a tombstone (recalled, content ""). */
  recall: Message;
  /** The head changed (unread, marks, last). */
  conversation: Conversation;
  receipt: { conv: ConvRef; uid: string; seq: string; type: "read" | "delivered" };
  typing: { conv: ConvRef; uid: string; typing: boolean };
  kick: { code: number; reason: string; byPlatform: string };
  /** goim pushes with op ≥ 1000 (room, mid, key, broadcast). */
  room: { op: number; body: Uint8Array; text: string };
  error: Error;
  /** The store's epoch changed (SyncReply.reset): every conversation was dropped and is resynced. */
  reset: { epoch: string };
  /** Another device of a member came online or went offline (Event DEVICE_ONLINE/OFFLINE). */
  device: { conv: ConvRef; uid: string; platform: string; online: boolean };
}

/** A v4 UUID: crypto.randomUUID where it exists (secure contexts, Node), else getRandomValues. */
export function uuid(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

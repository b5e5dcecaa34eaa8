// IM bodies in the JSON codec (reference im.md §5.3; proto/proto/starling/im/v1/im.proto,
// canonical proto3 JSON): encoding of requests and decoding of replies, pushes and events into
// the SDK's types. Unknown or missing fields take proto3 defaults.

import {
  ConvRef,
  Json,
  Message,
  bool,
  decodeConv,
  decodeMessage as decodeMsg,
  int,
  obj,
  str,
  u64,
} from "./types.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeBody(v: Json): Uint8Array {
  return enc.encode(JSON.stringify(v));
}

/** Parses a JSON body; an empty body is all defaults (as the server reads one). */
export function parseBody(b: Uint8Array): Json {
  const text = dec.decode(b).trim();
  if (text === "") return {};
  return obj(JSON.parse(text));
}

export function utf8(b: Uint8Array): string {
  return dec.decode(b);
}

/** ImWelcome: the op-8 body of an opted-in connection. */
export interface Welcome {
  code: number;
  epoch: string;
  serverTs: string;
  gapWaitMs: number;
  resyncMs: number;
  maxBody: number;
}

export function decodeWelcome(j: Json): Welcome {
  return {
    code: int(j["code"]),
    epoch: u64(j["epoch"]),
    serverTs: u64(j["serverTs"]),
    gapWaitMs: int(j["gapWaitMs"]),
    resyncMs: int(j["resyncMs"]),
    maxBody: int(j["maxBody"]),
  };
}

/** SendAck: the reply to IM_SEND (op 21) and IM_RECALL (op 27). */
export interface SendAck {
  code: number;
  clientMsgId: string;
  seq: string;
  msgId: string;
  serverTs: string;
  duplicate: boolean;
  stored: boolean;
  retryAfterMs: number;
  reason: string;
}

export function decodeSendAck(j: Json): SendAck {
  return {
    code: int(j["code"]),
    clientMsgId: str(j["clientMsgId"]),
    seq: u64(j["seq"]),
    msgId: u64(j["msgId"]),
    serverTs: u64(j["serverTs"]),
    duplicate: bool(j["duplicate"]),
    stored: bool(j["stored"]),
    retryAfterMs: int(j["retryAfterMs"]),
    reason: str(j["reason"]),
  };
}

/** ConvHead, one conversation of a SyncReply. */
export interface Head {
  conv: ConvRef;
  lastSeq: string;
  floorSeq: string;
  readSeq: string;
  peerReadSeq: string;
  peerRecvSeq: string;
  unread: number;
  last?: Message;
  left: boolean;
  updatedTs: string;
}

export interface SyncReply {
  code: number;
  convs: Head[];
  hasMore: boolean;
  cursor: string;
  serverTs: string;
  epoch: string;
  reset: boolean;
  gapWaitMs: number;
  resyncMs: number;
}

function decodeHead(v: unknown): Head {
  const j = obj(v);
  const h: Head = {
    conv: decodeConv(j["conv"]),
    lastSeq: u64(j["lastSeq"]),
    floorSeq: u64(j["floorSeq"]),
    readSeq: u64(j["readSeq"]),
    peerReadSeq: u64(j["peerReadSeq"]),
    peerRecvSeq: u64(j["peerRecvSeq"]),
    unread: int(j["unread"]),
    left: bool(j["left"]),
    updatedTs: u64(j["updatedTs"]),
  };
  if (j["last"] !== undefined && j["last"] !== null) h.last = decodeMsg(j["last"]);
  return h;
}

export function decodeSyncReply(j: Json): SyncReply {
  return {
    code: int(j["code"]),
    convs: Array.isArray(j["convs"]) ? (j["convs"] as unknown[]).map(decodeHead) : [],
    hasMore: bool(j["hasMore"]),
    cursor: str(j["cursor"]),
    serverTs: u64(j["serverTs"]),
    epoch: u64(j["epoch"]),
    reset: bool(j["reset"]),
    gapWaitMs: int(j["gapWaitMs"]),
    resyncMs: int(j["resyncMs"]),
  };
}

export interface PullReply {
  code: number;
  messages: Message[];
  hasMore: boolean;
  nextSeq: string;
  floorSeq: string;
  lastSeq: string;
}

export function decodePullReply(j: Json): PullReply {
  return {
    code: int(j["code"]),
    messages: Array.isArray(j["messages"]) ? (j["messages"] as unknown[]).map(decodeMsg) : [],
    hasMore: bool(j["hasMore"]),
    nextSeq: u64(j["nextSeq"]),
    floorSeq: u64(j["floorSeq"]),
    lastSeq: u64(j["lastSeq"]),
  };
}

export interface MembersReply {
  code: number;
  members: { uid: string; role: number; readSeq: string }[];
  cursor: string;
  hasMore: boolean;
}

export function decodeMembersReply(j: Json): MembersReply {
  const ms = Array.isArray(j["members"]) ? (j["members"] as unknown[]) : [];
  return {
    code: int(j["code"]),
    members: ms.map((v) => {
      const m = obj(v);
      return { uid: u64(m["uid"]), role: int(m["role"]), readSeq: u64(m["readSeq"]) };
    }),
    cursor: str(j["cursor"]),
    hasMore: bool(j["hasMore"]),
  };
}

/** Result: the reply to IM_READ, IM_RECV, IM_TYPING. */
export interface ResultBody {
  code: number;
  reason: string;
  retryAfterMs: number;
}

export function decodeResult(j: Json): ResultBody {
  return { code: int(j["code"]), reason: str(j["reason"]), retryAfterMs: int(j["retryAfterMs"]) };
}

export function decodePush(j: Json): Message[] {
  return Array.isArray(j["messages"]) ? (j["messages"] as unknown[]).map(decodeMsg) : [];
}

export type EventType =
  | "READ"
  | "DELIVERED"
  | "TYPING"
  | "CONV_ADDED"
  | "CONV_REMOVED"
  | "DEVICE_ONLINE"
  | "DEVICE_OFFLINE"
  | "TYPE_UNSPECIFIED";

const EVENT_TYPES: EventType[] = [
  "TYPE_UNSPECIFIED",
  "READ",
  "DELIVERED",
  "TYPING",
  "CONV_ADDED",
  "CONV_REMOVED",
  "DEVICE_ONLINE",
  "DEVICE_OFFLINE",
];

/** Event (op 43): not sequenced. */
export interface ImEvent {
  type: EventType;
  conv: ConvRef;
  uid: string;
  seq: string;
  ts: string;
  platform: string;
  typing: boolean;
}

export function decodeEvent(j: Json): ImEvent {
  const t = j["type"];
  const type =
    typeof t === "number"
      ? (EVENT_TYPES[t] ?? "TYPE_UNSPECIFIED")
      : ((EVENT_TYPES as string[]).includes(str(t)) ? (t as EventType) : "TYPE_UNSPECIFIED");
  return {
    type,
    conv: decodeConv(j["conv"]),
    uid: u64(j["uid"]),
    seq: u64(j["seq"]),
    ts: u64(j["ts"]),
    platform: typeof j["platform"] === "number" ? String(j["platform"]) : str(j["platform"]),
    typing: bool(j["typing"]),
  };
}

/** Kick (op 45): codes 4001 other device, 4002 admin, 4003 token revoked, 4004 user disabled, 4005 flood (requests sent before a 429's retry-after, past `im.flood_refusals`). The client stops on every one. */
export function decodeKick(j: Json): { code: number; reason: string; byPlatform: string } {
  return { code: int(j["code"]), reason: str(j["reason"]), byPlatform: str(j["byPlatform"]) };
}

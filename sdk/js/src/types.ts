// The SDK's public data types (reference im.md §5.3) and their decoding from the JSON codec:
// the canonical proto3 JSON mapping of proto/proto/starling/im/v1/im.proto (lowerCamel names,
// enums by name, 64-bit integers as decimal strings, default values possibly omitted). 64-bit
// ids stay decimal strings here: the SDK never turns them into JS numbers.

export type ConvKind = "P2P" | "GROUP" | "NOTICE";

/** A conversation as the viewer names it (im.md §5.3): P2P id = the other user's mid, GROUP id = gid, NOTICE id = "0". */
export interface ConvRef {
  kind: ConvKind;
  id: string;
}

/** "P2P:2", "GROUP:7": a stable map key for a conversation. */
export function convKey(c: ConvRef): string {
  return `${c.kind}:${c.id}`;
}

/**
 * A sequenced message (im.md §5.3 Message). `kind` "RECALL" is a recall event: `refSeq` is the
 * recalled seq (the target then shows `recalled: true` and empty content); apps usually show
 * only "NORMAL" and "SYSTEM" messages.
 */
export interface Message {
  conv: ConvRef;
  /** Contiguous per conversation, from 1; the message's order. */
  seq: string;
  msgId: string;
  /** "0" = the system. */
  sender: string;
  clientMsgId: string;
  kind: "NORMAL" | "RECALL" | "SYSTEM";
  contentType: number;
  content: string;
  /** ms since the Unix epoch, assigned at commit. */
  serverTs: string;
  refSeq: string;
  recalled: boolean;
  mentions: string[];
  /**
   * The sender's platform. The wire (im.proto `string sender_platform = 13`) carries a name
   * such as "web"; kept as that string. (ts-api.md listed `number`: im.proto wins.)
   */
  senderPlatform: string;
}

/** The SDK's local view of one conversation (from IM_SYNC heads, updated by pushes and events). */
export interface Conversation {
  conv: ConvRef;
  lastSeq: string;
  /** First seq this user may read. */
  floorSeq: string;
  /** This user's read mark (max over devices). */
  readSeq: string;
  /** P2P: the peer's read mark. */
  peerReadSeq: string;
  /** P2P: the peer's delivered mark. */
  peerRecvSeq: string;
  unread: number;
  /** Newest NORMAL or SYSTEM message (a tombstone if recalled). */
  last?: Message;
  /** Membership ended: readable up to lastSeq, read-only. */
  left: boolean;
  /** Highest seq held with no gap (im.md §5.4 step 2). */
  contig: string;
}

export type ConnectionState =
  | "idle"
  | "connecting"
  | "syncing"
  | "online"
  | "reconnecting"
  | "kicked"
  | "closed";

export interface SendResult {
  seq: string;
  msgId: string;
  serverTs: string;
  duplicate: boolean;
}

/** A final IM answer (im.md §5.5 codes), or the end of a client (kick: the kick code; close(): 0). */
export class ImError extends Error {
  code: number;
  retryAfterMs?: number;
  constructor(code: number, message: string, retryAfterMs?: number) {
    super(`${code}: ${message}`);
    this.name = "ImError";
    this.code = code;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }
}

// ---- decoding of the JSON codec -------------------------------------------------------------

/** A JSON object as received (untrusted shape). */
export type Json = Record<string, unknown>;

export function obj(v: unknown): Json {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {};
}

/** A 64-bit integer field as a decimal string ("0" when absent); numbers are accepted too. */
export function u64(v: unknown): string {
  if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v).toString();
  if (typeof v === "number" && Number.isInteger(v)) return String(v);
  if (typeof v === "bigint") return v.toString();
  return "0";
}

export function int(v: unknown): number {
  if (typeof v === "number" && Number.isFinite(v)) return Math.trunc(v);
  if (typeof v === "string" && /^-?\d+$/.test(v)) return Number(v);
  return 0;
}

export function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

export function bool(v: unknown): boolean {
  return v === true;
}

const CONV_KINDS: Record<string, ConvKind> = { P2P: "P2P", GROUP: "GROUP", NOTICE: "NOTICE", "1": "P2P", "2": "GROUP", "3": "NOTICE" };

export function decodeConv(v: unknown): ConvRef {
  const o = obj(v);
  return { kind: CONV_KINDS[String(o["kind"])] ?? "P2P", id: u64(o["id"]) };
}

const MSG_KINDS: Record<string, Message["kind"]> = { NORMAL: "NORMAL", RECALL: "RECALL", SYSTEM: "SYSTEM", "1": "NORMAL", "2": "RECALL", "3": "SYSTEM" };

export function decodeMessage(v: unknown): Message {
  const o = obj(v);
  return {
    conv: decodeConv(o["conv"]),
    seq: u64(o["seq"]),
    msgId: u64(o["msgId"]),
    sender: u64(o["sender"]),
    clientMsgId: str(o["clientMsgId"]),
    kind: MSG_KINDS[String(o["kind"])] ?? "NORMAL",
    contentType: int(o["contentType"]),
    content: str(o["content"]),
    serverTs: u64(o["serverTs"]),
    refSeq: u64(o["refSeq"]),
    recalled: bool(o["recalled"]),
    mentions: Array.isArray(o["mentions"]) ? (o["mentions"] as unknown[]).map(u64) : [],
    senderPlatform: typeof o["senderPlatform"] === "number" ? String(o["senderPlatform"]) : str(o["senderPlatform"]),
  };
}

/** The wire form of a ConvRef (what requests carry). */
export function encodeConv(c: ConvRef): Json {
  return { kind: c.kind, id: c.id };
}

// ---- 64-bit arithmetic on decimal strings ---------------------------------------------------

export function big(s: string): bigint {
  return BigInt(s);
}

export function maxSeq(a: string, b: string): string {
  return BigInt(a) >= BigInt(b) ? a : b;
}

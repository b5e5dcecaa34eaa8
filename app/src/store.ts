// What the page holds beside the SDK: every message seen per conversation (live, held by the
// SDK, or loaded by history when scrolling up), sends still waiting for their ack, who is
// typing, and display names. 64-bit ids stay decimal strings; they are compared as BigInt.
import type { ConvRef, Message } from "../../sdk/js/src/index.js";
import { convKey } from "../../sdk/js/src/index.js";

export const cmpSeq = (a: string, b: string): number => {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
};

export interface Pending {
  clientMsgId: string;
  content: string;
  failed?: string; // the error, once the SDK gave up (a final code)
}

export class ConvState {
  readonly bySeq = new Map<string, Message>();
  pending: Pending[] = [];
  /** History reached the conversation's floor: nothing older to load. */
  atFloor = false;
  loading = false;
  /** GROUP: each other member's read mark, from read receipts (server: group_read_receipts_max). */
  readBy = new Map<string, string>();
  /** uid → when their typing indicator expires (ms, performance.now()). */
  typing = new Map<string, number>();

  constructor(readonly conv: ConvRef) {}

  /** Adds or replaces (a recall turns a message into its tombstone); true when it changed. */
  put(m: Message): boolean {
    if (m.kind === "SYSTEM") this.noteJoins(m);
    const old = this.bySeq.get(m.seq);
    if (old && old.recalled === m.recalled && old.content === m.content) return false;
    this.bySeq.set(m.seq, m);
    this.pending = this.pending.filter((p) => p.clientMsgId !== m.clientMsgId || !m.clientMsgId);
    return true;
  }

  private noteJoins(m: Message) {
    try {
      const c = JSON.parse(m.content) as { type?: string; uids?: string[] };
      if (c.type === "members_added" || c.type === "group_created")
        for (const u of c.uids ?? []) this.joinedAt.set(u, m.seq);
    } catch { /* not a group change */ }
  }

  /** Ascending by seq. */
  sorted(): Message[] {
    return [...this.bySeq.values()].sort((a, b) => cmpSeq(a.seq, b.seq));
  }

  /** Raises `uid`'s read mark; true when it moved. */
  read(uid: string, seq: string): boolean {
    const old = this.readBy.get(uid);
    if (old !== undefined && cmpSeq(seq, old) <= 0) return false;
    this.readBy.set(uid, seq);
    return true;
  }

  /** GROUP: the seq of the SYSTEM message that added each member (they read from there on). */
  joinedAt = new Map<string, string>();

  /** How many others have read `seq` (members added after it never saw it). */
  readers(seq: string): number {
    let n = 0;
    for (const [uid, s] of this.readBy)
      if (cmpSeq(s, seq) >= 0 && cmpSeq(this.joinedAt.get(uid) ?? "0", seq) <= 0) n++;
    return n;
  }

  lowest(): string | undefined {
    let low: string | undefined;
    for (const s of this.bySeq.keys()) if (low === undefined || cmpSeq(s, low) < 0) low = s;
    return low;
  }

  highest(): string | undefined {
    let high: string | undefined;
    for (const s of this.bySeq.keys()) if (high === undefined || cmpSeq(s, high) > 0) high = s;
    return high;
  }
}

export class Store {
  private convs = new Map<string, ConvState>();

  all(): ConvState[] {
    return [...this.convs.values()];
  }

  get(conv: ConvRef): ConvState {
    const k = convKey(conv);
    let c = this.convs.get(k);
    if (!c) {
      c = new ConvState({ kind: conv.kind, id: conv.id });
      this.convs.set(k, c);
    }
    return c;
  }
}

/** A SYSTEM message's content (im/src/groups.rs) as a line of text. */
export function systemText(m: Message, name: (uid: string) => string): string {
  try {
    const c = JSON.parse(m.content) as { type?: string; by?: string; uids?: string[]; name?: string };
    const who = c.by && c.by !== "0" ? name(c.by) : "The system";
    const list = (c.uids ?? []).map(name).join(", ");
    switch (c.type) {
      case "group_created": return `${who} created the group${c.name ? ` “${c.name}”` : ""} with ${list}`;
      case "members_added": return `${who} added ${list}`;
      case "members_removed": return `${who} removed ${list}`;
      case "group_updated": return `${who} updated the group`;
      case "group_dissolved": return `${who} dissolved the group`;
      default: return m.content;
    }
  } catch {
    return m.content;
  }
}

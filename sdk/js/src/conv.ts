// One conversation's local state and the receive rule of the client contract (reference im.md
// §5.4 step 2), without I/O: `contig` = the highest seq such that every seq from the held
// base up to it is held; a message at or below contig is a duplicate and dropped, contig+1 is
// applied, anything higher is held until the gap closes (the client pulls after gapWaitMs).
// Seqs are bigint inside, decimal strings outside.

import { ConvRef, Conversation, Message, convKey } from "./types.js";

/** What applying messages produced, in order, for the client to emit. */
export interface Applied {
  /** Newly contiguous messages, ascending seq (each (conv, seq) once). */
  messages: Message[];
  /** Targets turned into tombstones by RECALL events among them. */
  recalled: Message[];
  /** Pushes dropped as already held (seq ≤ contig). */
  duplicates: number;
}

export class ConvState {
  readonly ref: ConvRef;
  readonly key: string;
  lastSeq = 0n;
  floorSeq = 0n;
  readSeq = 0n;
  peerReadSeq = 0n;
  peerRecvSeq = 0n;
  unread = 0;
  /** `unread` counts the messages up to this seq (a head's lastSeq or an applied message). */
  countedTo = 0n;
  last?: Message;
  left = false;
  /** ms: newest activity (for "newest first"), from heads and messages. */
  activity = 0n;
  /** False until the first page was pulled: pushes are held until then. */
  initialized = false;
  /** `messages` hold base+1..contig, ascending, with no gap. */
  base = 0n;
  contig = 0n;
  messages: Message[] = [];
  /** Messages above contig+1, waiting for the gap to close. */
  held = new Map<bigint, Message>();

  constructor(ref: ConvRef, private me: string) {
    this.ref = { kind: ref.kind, id: ref.id };
    this.key = convKey(ref);
  }

  /** True when messages wait above a gap. */
  get hasGap(): boolean {
    return this.held.size > 0;
  }

  /** The highest held seq above contig (0n when none). */
  get heldMax(): bigint {
    let m = 0n;
    for (const s of this.held.keys()) if (s > m) m = s;
    return m;
  }

  /**
   * Starts the contiguous range just below `first` (the lowest seq of the first page pulled,
   * or lastSeq + 1 when the conversation has nothing readable).
   */
  initAt(first: bigint): void {
    this.base = first - 1n;
    this.contig = this.base;
    this.messages = [];
    this.initialized = true;
  }

  /**
   * The floor rose above what is held (history cleared, retention): drop what is below it and
   * continue from floor - 1, so the missing seqs below the floor are not waited for. Returns
   * the held messages that became contiguous.
   */
  raiseFloor(floor: bigint): Applied {
    if (floor > this.floorSeq) this.floorSeq = floor;
    if (!this.initialized || floor - 1n <= this.contig) return { messages: [], recalled: [], duplicates: 0 };
    this.messages = [];
    this.base = floor - 1n;
    this.contig = this.base;
    // What was held from the floor on may now be contiguous.
    return this.ingest([]);
  }

  /** Takes messages (pushes or a pull page) through the receive rule. */
  ingest(ms: Message[]): Applied {
    const out: Applied = { messages: [], recalled: [], duplicates: 0 };
    for (const m of ms) {
      const s = BigInt(m.seq);
      if (!this.initialized) {
        this.held.set(s, m);
        continue;
      }
      if (s <= this.contig) {
        out.duplicates++;
        continue;
      }
      this.held.set(s, m);
    }
    if (!this.initialized) return out;
    for (;;) {
      const next = this.held.get(this.contig + 1n);
      if (!next) break;
      this.held.delete(this.contig + 1n);
      this.apply(next, out);
    }
    for (const s of [...this.held.keys()]) if (s <= this.contig) this.held.delete(s);
    return out;
  }

  private apply(m: Message, out: Applied): void {
    this.contig += 1n;
    this.messages.push(m);
    out.messages.push(m);
    const s = BigInt(m.seq);
    if (s > this.lastSeq) this.lastSeq = s;
    const ts = BigInt(m.serverTs);
    if (ts > this.activity) this.activity = ts;
    // The sender's read mark rises with its own message (im.md §6.5; the store does the same).
    if (m.sender === this.me && s > this.readSeq) {
      this.readSeq = s;
      this.unread = 0;
    }
    if (m.kind === "RECALL") {
      const t = this.find(BigInt(m.refSeq));
      if (t && !t.recalled) {
        t.recalled = true;
        t.content = "";
        out.recalled.push(t);
        if (t.kind === "NORMAL" && t.sender !== this.me && BigInt(t.seq) > this.readSeq && this.unread > 0) {
          this.unread--;
        }
      }
      if (this.last && this.last.seq === m.refSeq) {
        this.last.recalled = true;
        this.last.content = "";
      }
      return;
    }
    if (!this.last || BigInt(this.last.seq) <= s) this.last = m;
    if (s > this.countedTo) {
      this.countedTo = s;
      if (m.kind === "NORMAL" && m.sender !== this.me && s > this.readSeq) this.unread++;
    }
  }

  /**
   * The server's unread count (a ConvHead: counted up to `lastSeq` from its read mark
   * `serverRead`); when this device has read further meanwhile, counted here instead.
   */
  setUnread(unread: number, serverRead: bigint, lastSeq: bigint): void {
    this.unread = unread;
    if (lastSeq > this.countedTo) this.countedTo = lastSeq;
    if (this.readSeq > serverRead) this.recount();
  }

  private recount(): void {
    this.unread = this.messages.filter(
      (m) => m.kind === "NORMAL" && !m.recalled && m.sender !== this.me && BigInt(m.seq) > this.readSeq,
    ).length;
    if (this.readSeq >= this.lastSeq) this.unread = 0;
  }

  /** A held message by seq (messages are contiguous, so this is an index). */
  find(seq: bigint): Message | undefined {
    if (seq <= this.base || seq > this.contig) return undefined;
    return this.messages[Number(seq - this.base - 1n)];
  }

  /**
   * Older messages from a history page (ascending, contiguous): prepended when they end right
   * at the base. Returns whether they were kept.
   */
  prepend(page: Message[]): boolean {
    if (!this.initialized || page.length === 0) return false;
    const hi = BigInt(page[page.length - 1]!.seq);
    const lo = BigInt(page[0]!.seq);
    if (hi !== this.base || hi - lo + 1n !== BigInt(page.length)) return false;
    this.messages = page.concat(this.messages);
    this.base = lo - 1n;
    return true;
  }

  /** The read mark moved to `seq` (this device or another of the user's): recount unread. */
  markRead(seq: bigint): boolean {
    if (seq <= this.readSeq) return false;
    this.readSeq = seq;
    this.recount();
    return true;
  }

  view(): Conversation {
    const c: Conversation = {
      conv: { ...this.ref },
      lastSeq: this.lastSeq.toString(),
      floorSeq: this.floorSeq.toString(),
      readSeq: this.readSeq.toString(),
      peerReadSeq: this.peerReadSeq.toString(),
      peerRecvSeq: this.peerRecvSeq.toString(),
      unread: this.unread,
      left: this.left,
      contig: this.contig.toString(),
    };
    if (this.last) c.last = { ...this.last };
    return c;
  }
}

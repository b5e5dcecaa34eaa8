// Read and delivered marks, coalesced (reference im.md §5.4 step 5): per conversation and op
// (IM_READ 28, IM_RECV 30) at most one request per second, carrying the highest seq asked for
// meanwhile. Marks wait while the client is offline and go out once it is online again.

import { ConvRef, convKey } from "./types.js";

/** Sends one mark; returns false when it could not be sent now (offline). */
export type MarkSender = (op: number, conv: ConvRef, seq: bigint) => boolean;

interface Entry {
  op: number;
  conv: ConvRef;
  want: bigint;
  sent: bigint;
  /** ms of the last request (Date.now()). */
  at: number;
  timer: unknown;
}

/** The coalescing period, ms (one mark per conversation per second). */
export const MARK_PERIOD_MS = 1000;

/** Time for the coalescing: real timers by default, a scripted clock in unit tests. */
export interface Clock {
  now(): number;
  setTimeout(f: () => void, ms: number): unknown;
  clearTimeout(t: unknown): void;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (t) => clearTimeout(t as ReturnType<typeof setTimeout>),
};

export class Marks {
  private entries = new Map<string, Entry>();
  private paused = true;

  constructor(
    private send: MarkSender,
    private clock: Clock = realClock,
  ) {}

  /** Asks for a mark up to `seq` (lower or equal marks than already asked are no-ops). */
  want(op: number, conv: ConvRef, seq: bigint): void {
    const k = `${op}/${convKey(conv)}`;
    let e = this.entries.get(k);
    if (!e) this.entries.set(k, (e = { op, conv: { ...conv }, want: 0n, sent: 0n, at: Number.NEGATIVE_INFINITY, timer: undefined }));
    if (seq > e.want) e.want = seq;
    this.schedule(e);
  }

  /** A mark that was sent but not answered (connection lost): send it again later. */
  unsent(op: number, conv: ConvRef, seq: bigint): void {
    const e = this.entries.get(`${op}/${convKey(conv)}`);
    if (e && e.sent === seq) {
      e.sent = 0n;
      this.schedule(e);
    }
  }

  /** Offline: nothing is sent until resume(). */
  pause(): void {
    this.paused = true;
    for (const e of this.entries.values()) {
      if (e.timer !== undefined) this.clock.clearTimeout(e.timer);
      e.timer = undefined;
    }
  }

  /** Online again: marks asked for meanwhile go out. */
  resume(): void {
    this.paused = false;
    for (const e of this.entries.values()) this.schedule(e);
  }

  stop(): void {
    this.pause();
    this.entries.clear();
  }

  private schedule(e: Entry): void {
    if (this.paused || e.timer !== undefined || e.want <= e.sent) return;
    const wait = Math.max(0, e.at + MARK_PERIOD_MS - this.clock.now());
    e.timer = this.clock.setTimeout(() => this.flush(e), wait);
  }

  private flush(e: Entry): void {
    e.timer = undefined;
    if (this.paused || e.want <= e.sent) return;
    const seq = e.want;
    if (this.send(e.op, e.conv, seq)) {
      e.sent = seq;
      e.at = this.clock.now();
    }
  }
}

// One WebSocket connection to a comet's /sub speaking goim packets: auth (op 7 → 8), heartbeat
// (op 2 → 3), request/reply matched by header seq (IM ops: reply op = request op + 1, the
// request's seq echoed; reference im.md §5.2), and everything else handed to `onPacket`.
// It never reconnects: the client makes a new Connection per attempt.

import { Op, Packet, decodeMessage, encodePacket } from "./packet.js";

/** The part of the WebSocket API the SDK uses: the browser's and the `ws` package's both fit. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketCtor = new (url: string) => WebSocketLike;

/** A request that got no reply in time, or a connection that ended under it. */
export class ConnectionClosed extends Error {
  constructor(why: string) {
    super(why);
    this.name = "ConnectionClosed";
  }
}
export class RequestTimeout extends Error {
  constructor(op: number, ms: number) {
    super(`op ${op}: no reply within ${ms} ms`);
    this.name = "RequestTimeout";
  }
}

interface Pending {
  op: number;
  resolve: (p: Packet) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface ConnectionHandlers {
  /** Every packet that is not a reply to a request (pushes, heartbeat replies). */
  onPacket: (p: Packet) => void;
  /** Once, when the connection ended for any reason (`why` for logs). */
  onClose: (why: string) => void;
}

const enc = new TextEncoder();

export class Connection {
  private ws: WebSocketLike;
  private nextSeq = 1;
  private pending = new Map<number, Pending>();
  private closed = false;
  private beat?: ReturnType<typeof setInterval>;
  private watchdog?: ReturnType<typeof setInterval>;
  private lastRecv = Date.now();
  /** Bytes and packets seen, for tests and metrics. */
  readonly stats = { sent: 0, received: 0 };

  private constructor(ws: WebSocketLike, private h: ConnectionHandlers) {
    this.ws = ws;
  }

  /**
   * Opens `url` and waits for the WebSocket handshake, at most `timeoutMs`. Rejects with
   * ConnectionClosed when it fails.
   */
  static open(Ctor: WebSocketCtor, url: string, timeoutMs: number, h: ConnectionHandlers): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = new Ctor(url);
      } catch (e) {
        reject(new ConnectionClosed(`${url}: ${String(e)}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      const c = new Connection(ws, h);
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          c.close(`${url}: no WebSocket handshake within ${timeoutMs} ms`);
          reject(new ConnectionClosed(`${url}: handshake timeout`));
        }
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        c.lastRecv = Date.now();
        resolve(c);
      };
      ws.onmessage = (ev) => c.onMessage(ev.data);
      ws.onerror = () => {
        /* onclose follows */
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        const why = `closed by peer (code ${ev?.code ?? "?"}${ev?.reason ? ` ${ev.reason}` : ""})`;
        if (!opened) reject(new ConnectionClosed(`${url}: ${why}`));
        c.ended(why);
      };
    });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /**
   * Sends goim's auth (op 7) with `token` (goim's JSON token plus IM's opt-in, im.md §5.1, as
   * JSON text) and
   * resolves with the op-8 reply body. A refused auth is a close without reply: rejects.
   */
  async auth(token: string, timeoutMs: number): Promise<Uint8Array> {
    const p = await this.request(Op.AUTH, enc.encode(token), timeoutMs, Op.AUTH_REPLY);
    return p.body;
  }

  /**
   * Sends goim heartbeats (op 2) every `everyMs`, and closes the connection when nothing at all
   * arrived for `deadMs` (a dead peer: heartbeat replies stopped).
   */
  startHeartbeat(everyMs: number, deadMs: number): void {
    this.beat = setInterval(() => this.send(Op.HEARTBEAT, new Uint8Array(0)), everyMs);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastRecv > deadMs) this.close(`nothing received for ${deadMs} ms`);
    }, Math.max(50, Math.min(everyMs, deadMs) / 2));
  }

  /** Sends a packet without waiting for anything; false when the connection is closed. */
  send(op: number, body: Uint8Array, seq = this.nextSeq++): boolean {
    if (this.closed) return false;
    try {
      this.ws.send(encodePacket(op, seq, body));
      this.stats.sent++;
      return true;
    } catch (e) {
      this.close(`send failed: ${String(e)}`);
      return false;
    }
  }

  /**
   * Sends `op` and resolves with the reply (op + 1, or `replyOp`, with the same header seq).
   * Rejects with RequestTimeout after `timeoutMs` (the connection stays), ConnectionClosed when
   * the connection ends first.
   */
  request(op: number, body: Uint8Array, timeoutMs: number, replyOp = op + 1): Promise<Packet> {
    if (this.closed) return Promise.reject(new ConnectionClosed("connection closed"));
    const seq = this.nextSeq++ >>> 0;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new RequestTimeout(op, timeoutMs));
      }, timeoutMs);
      this.pending.set(seq, { op: replyOp, resolve, reject, timer });
      if (!this.send(op, body, seq)) {
        clearTimeout(timer);
        this.pending.delete(seq);
        reject(new ConnectionClosed("connection closed"));
      }
    });
  }

  /** Closes the socket; idempotent. `onClose` runs once with `why`. */
  close(why: string): void {
    if (this.closed) return;
    try {
      this.ws.close(1000, why.slice(0, 100));
    } catch {
      /* already closing */
    }
    this.ended(why);
  }

  private ended(why: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.beat);
    clearInterval(this.watchdog);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ConnectionClosed(why));
    }
    this.pending.clear();
    this.ws.onmessage = null;
    this.h.onClose(why);
  }

  private onMessage(data: unknown): void {
    if (this.closed) return;
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.close("a text WebSocket message (goim sends binary packets)");
      return;
    }
    this.lastRecv = Date.now();
    let packets: Packet[];
    try {
      packets = decodeMessage(bytes);
    } catch (e) {
      this.close(`undecodable packet: ${String(e)}`);
      return;
    }
    for (const p of packets) {
      this.stats.received++;
      const w = this.pending.get(p.seq);
      if (w && w.op === p.op) {
        this.pending.delete(p.seq);
        clearTimeout(w.timer);
        w.resolve(p);
      } else {
        this.h.onPacket(p);
      }
      if (this.closed) return;
    }
  }
}

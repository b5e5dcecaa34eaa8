// StarlingClient: the client contract of reference im.md §5.4 over goim's WebSocket with the
// JSON codec. Connection life (connect, auth, sync, reconnect with capped exponential backoff
// and full jitter, kick) is here; the receive rule is in conv.ts; marks in marks.ts.
//
// Layout: options and events (this file's top), the connect loop, the sync pass and pulls,
// pushes and events, then the public calls (send, recall, history, ...).

import { Connection, ConnectionClosed, RequestTimeout, WebSocketCtor } from "./connection.js";
import { ConvState, Applied } from "./conv.js";
import { Emitter } from "./emitter.js";
import { Marks } from "./marks.js";
import { pickNodes } from "./nodes.js";
import { ClientEvents, ClientOptions, uuid } from "./options.js";
import { Op, Packet } from "./packet.js";
import {
  ConnectionState,
  ConvRef,
  Conversation,
  ImError,
  Json,
  Message,
  SendResult,
  convKey,
  encodeConv,
} from "./types.js";
import {
  ImEvent,
  PullReply,
  SendAck,
  SyncReply,
  decodeEvent,
  decodeKick,
  decodeMembersReply,
  decodePullReply,
  decodePush,
  decodeSendAck,
  decodeSyncReply,
  decodeWelcome,
  encodeBody,
  parseBody,
  utf8,
} from "./wire.js";

const SYNC_PAGE = 100;
const PULL_PAGE = 100;
/** Final IM codes (im.md §5.5): never retried. */
const RETRY_CODES = new Set([429, 500, 503, 504]);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class StarlingClient extends Emitter<ClientEvents> {
  private opts: ClientOptions;
  private _state: ConnectionState = "idle";
  private convs = new Map<string, ConvState>();
  private conn: Connection | undefined;
  /** Resolved when a connection is authenticated; replaced after each loss. */
  private ready!: Promise<Connection>;
  private readyResolve!: (c: Connection) => void;
  private readyReject!: (e: Error) => void;
  /** The connection `ready` resolved with (undefined while it is pending). */
  private readyConn: Connection | undefined;
  /** A CONV_ADDED/REMOVED came while syncing: sync again once online. */
  private resyncWanted = false;
  /** The sync pass running on an online connection, if any (see sync()). */
  private syncing: { conn: Connection; done: Promise<void> } | undefined;
  private syncAgain = false;
  private running = false;
  /** Pushes held while a connection syncs (im.md §5.4 step 3; gim #46). */
  private holding: Message[] | undefined;
  private since = "0";
  private epoch = "0";
  private gapWaitMs = 1000;
  private resyncMs = 300_000;
  private resyncTimer: ReturnType<typeof setTimeout> | undefined;
  private gapTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Per conversation: the pull in progress (pulls of one conversation never overlap). */
  private pulls = new Map<string, Promise<void>>();
  private marks: Marks;
  private terminal: ImError | undefined;
  /** Counters, for tests and diagnostics. */
  readonly stats = { connects: 0, duplicates: 0, gapPulls: 0, syncPasses: 0, pushesDropped: 0, reads: 0, recvs: 0 };

  constructor(opts: ClientOptions) {
    super();
    if (!/^\d+$/.test(opts.mid)) throw new TypeError(`mid must be a decimal string, got ${JSON.stringify(opts.mid)}`);
    this.opts = { ...opts };
    this.marks = new Marks((op, conv, seq) => this.sendMark(op, conv, seq));
    this.newReady();
  }

  get state(): ConnectionState {
    return this._state;
  }

  private setState(s: ConnectionState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  private newReady(): void {
    this.ready = new Promise<Connection>((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    // Nobody may be waiting: a rejection then is not an error.
    this.ready.catch(() => undefined);
  }

  // ---- connect loop -------------------------------------------------------------------------

  /** Starts connecting; reconnects by itself until close() or a kick. */
  connect(): void {
    if (this.running || this.terminal) return;
    this.running = true;
    void this.loop();
  }

  /** Stops: closes the connection, rejects waiting calls with ImError code 0. */
  close(): void {
    this.stop(new ImError(0, "client closed"), "closed");
  }

  private stop(err: ImError, state: ConnectionState): void {
    if (this.terminal) return;
    this.terminal = err;
    this.running = false;
    this.readyReject(err);
    this.clearTimers();
    this.conn?.close(err.message);
    this.setState(state);
  }

  private clearTimers(): void {
    clearTimeout(this.resyncTimer);
    for (const t of this.gapTimers.values()) clearTimeout(t);
    this.gapTimers.clear();
    this.marks.stop();
  }

  private async loop(): Promise<void> {
    const Ctor = (this.opts.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as WebSocketCtor | undefined;
    if (!Ctor) {
      this.emit("error", new Error("no WebSocket: pass options.WebSocket (Node 20: the `ws` package)"));
      this.stop(new ImError(0, "no WebSocket constructor"), "closed");
      return;
    }
    const minMs = this.opts.reconnect?.minMs ?? 500;
    const maxMs = this.opts.reconnect?.maxMs ?? 30_000;
    let attempt = 0;
    let urlIndex = 0;
    let urls: string[] = [];
    let heartbeatMs = this.opts.heartbeatMs ?? 30_000;
    while (!this.terminal) {
      this.setState(this.stats.connects === 0 && attempt === 0 ? "connecting" : "reconnecting");
      if (urlIndex >= urls.length) {
        const picked = await pickNodes(this.opts);
        urls = picked.urls;
        if (picked.heartbeatMs && !this.opts.heartbeatMs) heartbeatMs = Math.min(30_000, picked.heartbeatMs);
        urlIndex = 0;
      }
      const url = urls[urlIndex++];
      let reachedOnline = false;
      if (url) {
        try {
          reachedOnline = await this.session(Ctor, url, heartbeatMs);
        } catch (e) {
          if (!this.terminal) this.emit("error", e instanceof Error ? e : new Error(String(e)));
        }
      } else if (!this.terminal) {
        this.emit("error", new Error("no server: set options.url or options.nodesUrl"));
      }
      if (this.terminal) break;
      // The next url of this round at once; the backoff only once every url failed.
      if (!reachedOnline && urlIndex < urls.length) continue;
      attempt = reachedOnline ? 0 : attempt + 1;
      this.setState("reconnecting");
      const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
      await sleep(Math.random() * cap);
    }
  }

  /**
   * One connection: open, auth, sync, then serve until it closes. Resolves true when it got
   * online (the backoff restarts), false when it failed before.
   */
  private async session(Ctor: WebSocketCtor, url: string, heartbeatMs: number): Promise<boolean> {
    const timeout = this.opts.connectTimeoutMs ?? 10_000;
    let closed!: () => void;
    const ended = new Promise<void>((r) => (closed = r));
    const imToken = typeof this.opts.imToken === "function" ? await this.opts.imToken() : this.opts.imToken;
    if (this.terminal) return false;
    // A socket that closes while still opening calls onClose before `open` settles (and then
    // `open` rejects): there is no connection to mark lost yet.
    let opened: Connection | undefined;
    const conn: Connection = await Connection.open(Ctor, url, timeout, {
      onPacket: (p) => this.onPacket(p),
      onClose: () => {
        if (opened) this.lost(opened);
        closed();
      },
    });
    opened = conn;
    if (this.terminal) {
      conn.close("client closed");
      return false;
    }
    this.conn = conn;
    let online = false;
    try {
      const auth: Json = {
        key: this.opts.key,
        room_id: this.opts.roomId ?? "",
        platform: this.opts.platform,
        accepts: this.opts.accepts ?? [],
        im: "json",
      };
      if (imToken) auth["im_token"] = imToken;
      // goim's `mid` is a JSON number: written from the decimal string, so a mid above 2^53
      // keeps every digit (a JS number would round it).
      const token = `{"mid":${this.opts.mid},${JSON.stringify(auth).slice(1)}`;
      const welcome = decodeWelcome(parseBody(await conn.auth(token, timeout)));
      if (welcome.code !== 0) throw new ImError(welcome.code, "auth refused");
      if (welcome.gapWaitMs > 0) this.gapWaitMs = welcome.gapWaitMs;
      if (welcome.resyncMs > 0) this.resyncMs = welcome.resyncMs;
      // Three heartbeats without any packet back: the peer is gone (a silent network drop).
      conn.startHeartbeat(heartbeatMs, heartbeatMs * 3 + 1000);
      this.stats.connects++;
      this.holding = [];
      this.setState("syncing");
      this.readyConn = conn;
      this.readyResolve(conn);
      this.resyncWanted = false;
      await this.syncPass(conn);
      const held = this.holding;
      this.holding = undefined;
      this.takeMessages(held);
      if (!conn.isOpen || this.terminal) return false;
      online = true;
      this.setState("online");
      this.marks.resume();
      this.scheduleResync();
      if (this.resyncWanted) this.sync(conn).catch((e) => this.requestFailed(conn, e));
      await ended;
      return true;
    } catch (e) {
      if (e instanceof ConnectionClosed && !this.terminal) return online;
      throw e;
    } finally {
      this.holding = undefined;
      conn.close("session ended");
      clearTimeout(this.resyncTimer);
      this.marks.pause();
    }
  }

  /** A connection ended: calls made from now on wait for the next one. */
  private lost(conn: Connection): void {
    if (this.conn === conn) this.conn = undefined;
    if (this.readyConn === conn) {
      this.readyConn = undefined;
      if (!this.terminal) this.newReady();
    }
  }

  private scheduleResync(): void {
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => {
      const conn = this.conn;
      if (!conn || this._state !== "online") return;
      this.sync(conn)
        .catch((e) => this.requestFailed(conn, e))
        .finally(() => {
          if (this.conn === conn && this._state === "online") this.scheduleResync();
        });
    }, this.resyncMs);
  }

  /** A sync or pull that failed: the connection is not trusted any more (it reconnects). */
  private requestFailed(conn: Connection, e: unknown): void {
    if (e instanceof ConnectionClosed || this.terminal) return;
    this.emit("error", e instanceof Error ? e : new Error(String(e)));
    conn.close(`request failed: ${String(e)}`);
  }

  // ---- sync and pulls (im.md §5.4 steps 3 and 4) -------------------------------------------

  private async call(conn: Connection, op: number, body: Json): Promise<Json> {
    const p = await conn.request(op, encodeBody(body), this.opts.requestTimeoutMs ?? 10_000);
    return parseBody(p.body);
  }

  /**
   * A sync pass on an online connection (periodic, resync(), a directory event): one at a
   * time; asked for during one, one more pass follows it.
   */
  private sync(conn: Connection): Promise<void> {
    if (this.syncing?.conn === conn) {
      this.syncAgain = true;
      return this.syncing.done;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          this.syncAgain = false;
          await this.syncPass(conn);
        } while (this.syncAgain && conn.isOpen);
      } finally {
        if (this.syncing?.conn === conn) this.syncing = undefined;
      }
    };
    const done = run();
    this.syncing = { conn, done };
    return done;
  }

  /** IM_SYNC pages from `since`, then the pulls the heads call for. */
  private async syncPass(conn: Connection): Promise<void> {
    this.stats.syncPasses++;
    let cursor = "";
    let resets = 0;
    const stale: ConvState[] = [];
    let r: SyncReply;
    for (;;) {
      r = decodeSyncReply(await this.call(conn, Op.IM_SYNC, { since: this.since, cursor, limit: SYNC_PAGE, epoch: this.epoch }));
      if (r.code !== 0) throw new ImError(r.code, "IM_SYNC refused");
      if (r.gapWaitMs > 0) this.gapWaitMs = r.gapWaitMs;
      if (r.resyncMs > 0) this.resyncMs = r.resyncMs;
      if (r.reset && resets++ === 0) {
        this.wipe();
        this.since = "0";
        this.epoch = r.epoch;
        cursor = "";
        stale.length = 0;
        this.emit("reset", { epoch: r.epoch });
        continue;
      }
      this.epoch = r.epoch;
      for (const h of r.convs) {
        const cs = this.convState(h.conv);
        const before = cs.view();
        this.publish(cs, cs.raiseFloor(BigInt(h.floorSeq)));
        const last = BigInt(h.lastSeq);
        if (last > cs.lastSeq) cs.lastSeq = last;
        if (BigInt(h.readSeq) > cs.readSeq) cs.readSeq = BigInt(h.readSeq);
        if (BigInt(h.peerReadSeq) > cs.peerReadSeq) cs.peerReadSeq = BigInt(h.peerReadSeq);
        if (BigInt(h.peerRecvSeq) > cs.peerRecvSeq) cs.peerRecvSeq = BigInt(h.peerRecvSeq);
        cs.setUnread(h.unread, BigInt(h.readSeq), last);
        cs.left = h.left;
        if (h.last && (!cs.last || BigInt(h.last.seq) >= BigInt(cs.last.seq))) cs.last = h.last;
        const ts = BigInt(h.updatedTs);
        if (ts > cs.activity) cs.activity = ts;
        if (!cs.initialized || last > cs.contig) stale.push(cs);
        if (JSON.stringify(before) !== JSON.stringify(cs.view())) this.emit("conversation", cs.view());
      }
      if (!r.hasMore) break;
      cursor = r.cursor;
    }
    for (const cs of this.convs.values()) if (cs.hasGap && !stale.includes(cs)) stale.push(cs);
    for (const cs of stale) await this.catchUp(conn, cs);
    this.since = r.serverTs;
  }

  /** Drops every conversation (store epoch changed). */
  private wipe(): void {
    for (const t of this.gapTimers.values()) clearTimeout(t);
    this.gapTimers.clear();
    this.convs.clear();
  }

  private convState(ref: ConvRef): ConvState {
    const k = convKey(ref);
    let cs = this.convs.get(k);
    if (!cs) this.convs.set(k, (cs = new ConvState(ref, this.opts.mid)));
    return cs;
  }

  /**
   * Brings one conversation up to date, one pull at a time per conversation: the newest page
   * (backward) the first time, then forward pages from contig + 1 while the server has more
   * or messages are held above a gap.
   */
  private catchUp(conn: Connection, cs: ConvState): Promise<void> {
    const prev = this.pulls.get(cs.key) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(() => this.pullNow(conn, cs));
    this.pulls.set(cs.key, next);
    void next.finally(() => {
      if (this.pulls.get(cs.key) === next) this.pulls.delete(cs.key);
    }).catch(() => undefined);
    return next;
  }

  private async pullNow(conn: Connection, cs: ConvState): Promise<void> {
    try {
      await this.pullPages(conn, cs);
    } catch (e) {
      // The server refused this conversation's pull (an IM code): reported, and the others
      // and the connection go on; the next sync or push tries again.
      if (!(e instanceof ImError)) throw e;
      this.emit("error", e);
      return;
    }
    this.armGap(cs);
  }

  private async pullPages(conn: Connection, cs: ConvState): Promise<void> {
    if (!conn.isOpen || this.convs.get(cs.key) !== cs) return;
    if (!cs.initialized) {
      const r = await this.pull(conn, cs.ref, "BACKWARD", "0", this.opts.initialPage ?? 50);
      this.publish(cs, cs.raiseFloor(BigInt(r.floorSeq)));
      const page = r.messages.slice().sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
      // Started meanwhile (an own first message): the page then goes through the rule.
      if (!cs.initialized) cs.initAt(page.length > 0 ? BigInt(page[0]!.seq) : BigInt(r.lastSeq) + 1n);
      if (BigInt(r.lastSeq) > cs.lastSeq) cs.lastSeq = BigInt(r.lastSeq);
      this.publish(cs, cs.ingest(page));
    }
    // Forward while the server has more than contig, or pushes wait above a gap; a page that
    // brings nothing new ends it (a held push then waits for the next gap pull).
    for (;;) {
      const held = cs.heldMax;
      const want = held > cs.lastSeq ? held : cs.lastSeq;
      if (cs.contig >= want || !conn.isOpen) break;
      const r = await this.pull(conn, cs.ref, "FORWARD", (cs.contig + 1n).toString(), PULL_PAGE);
      this.publish(cs, cs.raiseFloor(BigInt(r.floorSeq)));
      if (BigInt(r.lastSeq) > cs.lastSeq) cs.lastSeq = BigInt(r.lastSeq);
      const before = cs.contig;
      this.publish(cs, cs.ingest(r.messages));
      if (cs.contig === before) break;
    }
  }

  private async pull(conn: Connection, conv: ConvRef, dir: "FORWARD" | "BACKWARD", fromSeq: string, limit: number): Promise<PullReply> {
    const r = decodePullReply(await this.call(conn, Op.IM_PULL, { conv: encodeConv(conv), dir, fromSeq, limit }));
    if (r.code !== 0) throw new ImError(r.code, `IM_PULL ${dir} ${conv.kind}:${conv.id} from ${fromSeq}`);
    return r;
  }

  // ---- pushes and events ------------------------------------------------------------------

  private onPacket(p: Packet): void {
    try {
      switch (p.op) {
        case Op.IM_MSG:
          this.onPush(decodePush(parseBody(p.body)));
          return;
        case Op.IM_EVENT:
          this.onEvent(decodeEvent(parseBody(p.body)));
          return;
        case Op.IM_KICK: {
          const k = decodeKick(parseBody(p.body));
          this.emit("kick", k);
          this.stop(new ImError(k.code, k.reason || "kicked"), "kicked");
          return;
        }
        case Op.HEARTBEAT_REPLY:
        case Op.CHANGE_ROOM_REPLY:
          return;
        default:
          if (p.op >= 1000) this.emit("room", { op: p.op, body: p.body, text: utf8(p.body) });
      }
    } catch (e) {
      this.emit("error", new Error(`op ${p.op}: undecodable body: ${String(e)}`));
    }
  }

  private onPush(ms: Message[]): void {
    const drop = this.opts.testHooks?.dropPush;
    const repeat = this.opts.testHooks?.repeatPush;
    const kept = drop ? ms.filter((m) => !drop(m)) : ms;
    this.stats.pushesDropped += ms.length - kept.length;
    const batches = [kept];
    if (repeat) batches.push(kept.filter(repeat).map((m) => ({ ...m })));
    for (const b of batches) {
      if (this.holding) this.holding.push(...b);
      else this.takeMessages(b);
    }
  }

  /** Pushed messages through the receive rule; a conversation seen first is pulled. */
  private takeMessages(ms: Message[]): void {
    const by = new Map<string, Message[]>();
    for (const m of ms) {
      const k = convKey(m.conv);
      let l = by.get(k);
      if (!l) by.set(k, (l = []));
      l.push(m);
    }
    for (const [, l] of by) {
      const cs = this.convState(l[0]!.conv);
      this.publish(cs, cs.ingest(l));
      if (!cs.initialized) {
        if (this.conn && !this.pulls.has(cs.key)) {
          const conn = this.conn;
          this.catchUp(conn, cs).catch((e) => this.requestFailed(conn, e));
        }
      } else {
        this.armGap(cs);
      }
    }
  }

  /** Emits what applying produced and queues the delivered mark. */
  private publish(cs: ConvState, a: Applied): void {
    this.stats.duplicates += a.duplicates;
    for (const m of a.messages) this.emit("message", m);
    for (const t of a.recalled) this.emit("recall", t);
    if (a.messages.length > 0) {
      this.emit("conversation", cs.view());
      if (this.opts.autoDelivered !== false) this.marks.want(Op.IM_RECV, cs.ref, cs.contig);
    }
  }

  /** A gap open for gapWaitMs is pulled (im.md §5.4 step 2). */
  private armGap(cs: ConvState): void {
    const t = this.gapTimers.get(cs.key);
    if (!cs.hasGap) {
      if (t) {
        clearTimeout(t);
        this.gapTimers.delete(cs.key);
      }
      return;
    }
    if (t) return;
    this.gapTimers.set(
      cs.key,
      setTimeout(() => {
        this.gapTimers.delete(cs.key);
        const conn = this.conn;
        // Offline: the next connect's sync pulls every conversation with a gap. Syncing: later.
        if (!cs.hasGap || !conn) return;
        if (this.holding) {
          this.armGap(cs);
          return;
        }
        this.stats.gapPulls++;
        this.catchUp(conn, cs).catch((e) => this.requestFailed(conn, e));
      }, this.gapWaitMs),
    );
  }

  private onEvent(e: ImEvent): void {
    const mine = e.uid === this.opts.mid;
    switch (e.type) {
      case "READ":
      case "DELIVERED": {
        const cs = this.convs.get(convKey(e.conv));
        const seq = BigInt(e.seq);
        let changed = false;
        if (!cs) {
          // Not known here yet: the next sync brings its head.
        } else if (e.type === "READ" && mine) changed = cs.markRead(seq);
        else if (e.type === "READ" && seq > cs.peerReadSeq) {
          cs.peerReadSeq = seq;
          changed = true;
        } else if (e.type === "DELIVERED" && !mine && seq > cs.peerRecvSeq) {
          cs.peerRecvSeq = seq;
          changed = true;
        }
        if (!mine) this.emit("receipt", { conv: e.conv, uid: e.uid, seq: e.seq, type: e.type === "READ" ? "read" : "delivered" });
        if (changed && cs) this.emit("conversation", cs.view());
        return;
      }
      case "TYPING":
        this.emit("typing", { conv: e.conv, uid: e.uid, typing: e.typing });
        return;
      case "CONV_ADDED":
      case "CONV_REMOVED": {
        // The directory changed: a sync pass brings the head (and pulls a new conversation).
        const conn = this.conn;
        if (this.holding) this.resyncWanted = true;
        else if (conn) this.sync(conn).catch((err) => this.requestFailed(conn, err));
        return;
      }
      case "DEVICE_ONLINE":
      case "DEVICE_OFFLINE":
        this.emit("device", { conv: e.conv, uid: e.uid, platform: e.platform, online: e.type === "DEVICE_ONLINE" });
        return;
      default:
        return;
    }
  }

  // ---- marks ------------------------------------------------------------------------------

  /** Sends one IM_READ / IM_RECV; false when there is no connection (kept for later). */
  private sendMark(op: number, conv: ConvRef, seq: bigint): boolean {
    const conn = this.conn;
    if (!conn || this._state !== "online") return false;
    if (op === Op.IM_READ) this.stats.reads++;
    else this.stats.recvs++;
    this.call(conn, op, { conv: encodeConv(conv), seq: seq.toString() })
      .then((r) => {
        const code = Number(r["code"] ?? 0);
        if (code !== 0) this.emit("error", new ImError(code, `mark op ${op} ${convKey(conv)} ${seq}: ${String(r["reason"] ?? "")}`));
      })
      .catch((e) => {
        this.marks.unsent(op, conv, seq);
        if (!(e instanceof ConnectionClosed)) this.emit("error", e instanceof Error ? e : new Error(String(e)));
      });
    return true;
  }

  // ---- public calls -----------------------------------------------------------------------

  /** The authenticated connection, waiting for one; rejects once the client is closed or kicked. */
  private connection(): Promise<Connection> {
    if (this.terminal) return Promise.reject(this.terminal);
    return this.ready;
  }

  /**
   * Sends `op` (IM_SEND or IM_RECALL) until a final answer, resending the same body (same
   * clientMsgId) on timeout, a lost connection, 429, 500, 503, 504 (im.md §5.4 step 1): after
   * the answer's retryAfterMs plus full jitter over min(sendRetry.maxMs, sendRetry.minMs ×
   * 2^attempt). Resolves on code 0 (duplicate included); rejects with ImError on a
   * final code, a kick or close().
   */
  private async acked(op: number, body: Json, own: (ack: SendAck) => Message): Promise<SendResult> {
    const bytes = encodeBody(body);
    const timeout = this.opts.sendTimeoutMs ?? 5000;
    const minMs = this.opts.sendRetry?.minMs ?? 100;
    const maxMs = this.opts.sendRetry?.maxMs ?? 30_000;
    const retryCeiling = (attempt: number) => Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
    for (let attempt = 0; ; attempt++) {
      const conn = await this.connection();
      let ack;
      try {
        const reply = conn.request(op, bytes, timeout);
        if (this.opts.testHooks?.dropAfterSend?.(String(body["clientMsgId"]))) conn.close("test hook: dropAfterSend");
        ack = decodeSendAck(parseBody((await reply).body));
      } catch (e) {
        if (!(e instanceof RequestTimeout || e instanceof ConnectionClosed)) throw e;
        // Outcome unknown: the same id again after a jittered backoff (a lost connection
        // also waits for the next one, inside connection()).
        await sleep(Math.random() * retryCeiling(attempt));
        if (this.terminal) throw this.terminal;
        continue;
      }
      if (ack.code === 0) {
        // The server does not push a message to the connection that sent it (im/src/deliver.rs
        // `messages`): the ack is this connection's copy. The first message of a conversation
        // new to this client starts it at once (seq 1 has nothing below it to pull).
        if (!this.terminal) {
          const m = own(ack);
          const cs = this.convState(m.conv);
          if (!cs.initialized && m.seq === "1") cs.initAt(1n);
          this.takeMessages([m]);
        }
        return { seq: ack.seq, msgId: ack.msgId, serverTs: ack.serverTs, duplicate: ack.duplicate };
      }
      if (!RETRY_CODES.has(ack.code)) throw new ImError(ack.code, ack.reason || "refused", ack.retryAfterMs || undefined);
      // The server's retry-after is a floor; the jittered backoff on top keeps clients told
      // the same retry-after (a whole deployment after an outage) from coming back together.
      await sleep(ack.retryAfterMs + Math.random() * retryCeiling(attempt));
      if (this.terminal) throw this.terminal;
    }
  }

  /**
   * Sends a message; resolves once the server acknowledged it (SendAck code 0 or duplicate),
   * retrying with the same clientMsgId; rejects with ImError on 400/403/404/409/410/413. The
   * message also arrives through "message" like any other.
   */
  send(
    conv: ConvRef,
    content: string,
    o: { contentType?: number; mentions?: string[]; refSeq?: string; clientMsgId?: string } = {},
  ): Promise<SendResult> {
    const clientMsgId = o.clientMsgId ?? uuid();
    const contentType = o.contentType ?? 1;
    const mentions = o.mentions ?? [];
    const refSeq = o.refSeq ?? "0";
    return this.acked(
      Op.IM_SEND,
      { clientMsgId, conv: encodeConv(conv), contentType, content, mentions, refSeq },
      (ack) => this.own(conv, ack, { clientMsgId, kind: "NORMAL", contentType, content, refSeq, mentions }),
    );
  }

  /** Recalls `seq` (im.md §1.7); resolves with the recall event's seq. Same retry rules as send. */
  recall(conv: ConvRef, seq: string): Promise<SendResult> {
    const clientMsgId = uuid();
    return this.acked(Op.IM_RECALL, { conv: encodeConv(conv), seq, clientMsgId }, (ack) =>
      this.own(conv, ack, { clientMsgId, kind: "RECALL", contentType: 0, content: "", refSeq: seq, mentions: [] }),
    );
  }

  /** This connection's copy of a message it sent, from the ack. */
  private own(conv: ConvRef, ack: SendAck, m: Pick<Message, "clientMsgId" | "kind" | "contentType" | "content" | "refSeq" | "mentions">): Message {
    return {
      conv: { kind: conv.kind, id: conv.id },
      seq: ack.seq,
      msgId: ack.msgId,
      sender: this.opts.mid,
      serverTs: ack.serverTs,
      recalled: false,
      senderPlatform: this.opts.platform,
      ...m,
      mentions: m.mentions.slice(),
    };
  }

  /** Marks read up to `seq`: applied locally now, IM_READ at most once per second per conversation. */
  markRead(conv: ConvRef, seq: string): void {
    const cs = this.convs.get(convKey(conv));
    if (cs?.markRead(BigInt(seq))) this.emit("conversation", cs.view());
    this.marks.want(Op.IM_READ, conv, BigInt(seq));
  }

  /** Tells the conversation this user is (not) typing; dropped while offline. */
  typing(conv: ConvRef, typing: boolean): void {
    const conn = this.conn;
    if (!conn || this._state !== "online") return;
    this.call(conn, Op.IM_TYPING, { conv: encodeConv(conv), typing }).catch(() => undefined);
  }

  /**
   * Older messages: IM_PULL BACKWARD from `beforeSeq` (exclusive; "0" = the newest), ascending.
   * When they end right below what messages(conv) holds, they are prepended to it.
   */
  async history(conv: ConvRef, beforeSeq: string, limit = 50): Promise<Message[]> {
    const conn = await this.connection();
    const r = await this.pull(conn, conv, "BACKWARD", beforeSeq, limit);
    const page = r.messages.slice().sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
    const cs = this.convs.get(convKey(conv));
    if (cs && cs.prepend(page)) return cs.messages.slice(0, page.length);
    return page;
  }

  /** A group's members (IM_MEMBERS, every page), with read marks when the server shows them. */
  async members(gid: string): Promise<{ uid: string; role: number; readSeq: string }[]> {
    const out: { uid: string; role: number; readSeq: string }[] = [];
    let cursor = "";
    for (;;) {
      const conn = await this.connection();
      const r = decodeMembersReply(await this.call(conn, Op.IM_MEMBERS, { gid, cursor, limit: 1000 }));
      if (r.code !== 0) throw new ImError(r.code, `IM_MEMBERS ${gid}`);
      out.push(...r.members);
      if (!r.hasMore || r.cursor === cursor) return out;
      cursor = r.cursor;
    }
  }

  /**
   * Syncs the directory now (im.md §5.4 step 4: call it when the app comes to the foreground);
   * a no-op unless online. Resolves once the sync and the pulls it called for are done.
   */
  async resync(): Promise<void> {
    const conn = this.conn;
    if (!conn || this._state !== "online") return;
    await this.sync(conn).catch((e) => this.requestFailed(conn, e));
  }

  /** goim's room change (op 12); kept for reconnects. */
  changeRoom(roomId: string): void {
    this.opts.roomId = roomId;
    this.conn?.send(Op.CHANGE_ROOM, new TextEncoder().encode(roomId));
  }

  /** Every known conversation, newest activity first. */
  conversations(): Conversation[] {
    return [...this.convs.values()]
      .sort((a, b) => (a.activity === b.activity ? 0 : a.activity > b.activity ? -1 : 1))
      .map((c) => c.view());
  }

  /** The messages held for `conv`: contiguous, ascending seq (RECALL events included). */
  messages(conv: ConvRef): Message[] {
    return this.convs.get(convKey(conv))?.messages.slice() ?? [];
  }

  /** One conversation's local view, if known. */
  conversation(conv: ConvRef): Conversation | undefined {
    return this.convs.get(convKey(conv))?.view();
  }
}

var __defProp = Object.defineProperty;
var __defNormalProp = (obj2, key, value) => key in obj2 ? __defProp(obj2, key, { enumerable: true, configurable: true, writable: true, value }) : obj2[key] = value;
var __publicField = (obj2, key, value) => __defNormalProp(obj2, typeof key !== "symbol" ? key + "" : key, value);

// ../sdk/js/src/packet.ts
var HEADER_LEN = 16;
var VERSION = 1;
var Op = {
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  IM_SEND: 20,
  IM_SEND_ACK: 21,
  IM_SYNC: 22,
  IM_SYNC_REPLY: 23,
  IM_PULL: 24,
  IM_PULL_REPLY: 25,
  IM_RECALL: 26,
  IM_RECALL_ACK: 27,
  IM_READ: 28,
  IM_READ_REPLY: 29,
  IM_RECV: 30,
  IM_RECV_REPLY: 31,
  IM_TYPING: 32,
  IM_TYPING_REPLY: 33,
  IM_MEMBERS: 34,
  IM_MEMBERS_REPLY: 35,
  IM_MSG: 41,
  IM_EVENT: 43,
  IM_KICK: 45
};
var PacketError = class extends Error {
};
function encodePacket(op, seq, body) {
  const out = new Uint8Array(HEADER_LEN + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length);
  v.setUint16(4, HEADER_LEN);
  v.setUint16(6, VERSION);
  v.setUint32(8, op >>> 0);
  v.setUint32(12, seq >>> 0);
  out.set(body, HEADER_LEN);
  return out;
}
function decodeMessage(bytes) {
  const out = [];
  splitInto(bytes, out);
  return out;
}
function splitInto(bytes, out) {
  let off = 0;
  while (off < bytes.length) {
    if (bytes.length - off < HEADER_LEN) {
      throw new PacketError(`short packet: ${bytes.length - off} bytes`);
    }
    const v = new DataView(bytes.buffer, bytes.byteOffset + off, bytes.length - off);
    const packLen = v.getUint32(0);
    const headerLen = v.getUint16(4);
    if (headerLen < HEADER_LEN || packLen < headerLen || packLen > bytes.length - off) {
      throw new PacketError(`bad lengths: packLen ${packLen}, headerLen ${headerLen}`);
    }
    const p = {
      ver: v.getUint16(6),
      op: v.getUint32(8),
      seq: v.getUint32(12),
      body: bytes.subarray(off + headerLen, off + packLen)
    };
    if (p.op === Op.RAW) {
      splitInto(p.body, out);
    } else {
      out.push(p);
    }
    off += packLen;
  }
}

// ../sdk/js/src/connection.ts
var ConnectionClosed = class extends Error {
  constructor(why) {
    super(why);
    this.name = "ConnectionClosed";
  }
};
var RequestTimeout = class extends Error {
  constructor(op, ms) {
    super(`op ${op}: no reply within ${ms} ms`);
    this.name = "RequestTimeout";
  }
};
var enc = new TextEncoder();
var Connection = class _Connection {
  constructor(ws, h) {
    __publicField(this, "h", h);
    __publicField(this, "ws");
    __publicField(this, "nextSeq", 1);
    __publicField(this, "pending", /* @__PURE__ */ new Map());
    __publicField(this, "closed", false);
    __publicField(this, "beat");
    __publicField(this, "watchdog");
    __publicField(this, "lastRecv", Date.now());
    /** Bytes and packets seen, for tests and metrics. */
    __publicField(this, "stats", { sent: 0, received: 0 });
    this.ws = ws;
  }
  /**
   * Opens `url` and waits for the WebSocket handshake, at most `timeoutMs`. Rejects with
   * ConnectionClosed when it fails.
   */
  static open(Ctor, url, timeoutMs, h) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new Ctor(url);
      } catch (e) {
        reject(new ConnectionClosed(`${url}: ${String(e)}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      const c = new _Connection(ws, h);
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
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        const why = `closed by peer (code ${ev?.code ?? "?"}${ev?.reason ? ` ${ev.reason}` : ""})`;
        if (!opened) reject(new ConnectionClosed(`${url}: ${why}`));
        c.ended(why);
      };
    });
  }
  get isOpen() {
    return !this.closed;
  }
  /**
   * Sends goim's auth (op 7) with `token` (goim's JSON token plus IM's opt-in, im.md §5.1, as
   * JSON text) and
   * resolves with the op-8 reply body. A refused auth is a close without reply: rejects.
   */
  async auth(token2, timeoutMs) {
    const p = await this.request(Op.AUTH, enc.encode(token2), timeoutMs, Op.AUTH_REPLY);
    return p.body;
  }
  /**
   * Sends goim heartbeats (op 2) every `everyMs`, and closes the connection when nothing at all
   * arrived for `deadMs` (a dead peer: heartbeat replies stopped).
   */
  startHeartbeat(everyMs, deadMs) {
    this.beat = setInterval(() => this.send(Op.HEARTBEAT, new Uint8Array(0)), everyMs);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastRecv > deadMs) this.close(`nothing received for ${deadMs} ms`);
    }, Math.max(50, Math.min(everyMs, deadMs) / 2));
  }
  /** Sends a packet without waiting for anything; false when the connection is closed. */
  send(op, body, seq = this.nextSeq++) {
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
  request(op, body, timeoutMs, replyOp = op + 1) {
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
  close(why) {
    if (this.closed) return;
    try {
      this.ws.close(1e3, why.slice(0, 100));
    } catch {
    }
    this.ended(why);
  }
  ended(why) {
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
  onMessage(data) {
    if (this.closed) return;
    let bytes;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.close("a text WebSocket message (goim sends binary packets)");
      return;
    }
    this.lastRecv = Date.now();
    let packets;
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
};

// ../sdk/js/src/types.ts
function convKey(c) {
  return `${c.kind}:${c.id}`;
}
var ImError = class extends Error {
  constructor(code, message, retryAfterMs) {
    super(`${code}: ${message}`);
    __publicField(this, "code");
    __publicField(this, "retryAfterMs");
    this.name = "ImError";
    this.code = code;
    if (retryAfterMs !== void 0) this.retryAfterMs = retryAfterMs;
  }
};
function obj(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
}
function u64(v) {
  if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v).toString();
  if (typeof v === "number" && Number.isInteger(v)) return String(v);
  if (typeof v === "bigint") return v.toString();
  return "0";
}
function int(v) {
  if (typeof v === "number" && Number.isFinite(v)) return Math.trunc(v);
  if (typeof v === "string" && /^-?\d+$/.test(v)) return Number(v);
  return 0;
}
function str(v) {
  return typeof v === "string" ? v : "";
}
function bool(v) {
  return v === true;
}
var CONV_KINDS = { P2P: "P2P", GROUP: "GROUP", NOTICE: "NOTICE", "1": "P2P", "2": "GROUP", "3": "NOTICE" };
function decodeConv(v) {
  const o = obj(v);
  return { kind: CONV_KINDS[String(o["kind"])] ?? "P2P", id: u64(o["id"]) };
}
var MSG_KINDS = { NORMAL: "NORMAL", RECALL: "RECALL", SYSTEM: "SYSTEM", "1": "NORMAL", "2": "RECALL", "3": "SYSTEM" };
function decodeMessage2(v) {
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
    mentions: Array.isArray(o["mentions"]) ? o["mentions"].map(u64) : [],
    senderPlatform: typeof o["senderPlatform"] === "number" ? String(o["senderPlatform"]) : str(o["senderPlatform"])
  };
}
function encodeConv(c) {
  return { kind: c.kind, id: c.id };
}

// ../sdk/js/src/conv.ts
var ConvState = class {
  constructor(ref, me) {
    __publicField(this, "me", me);
    __publicField(this, "ref");
    __publicField(this, "key");
    __publicField(this, "lastSeq", 0n);
    __publicField(this, "floorSeq", 0n);
    __publicField(this, "readSeq", 0n);
    __publicField(this, "peerReadSeq", 0n);
    __publicField(this, "peerRecvSeq", 0n);
    __publicField(this, "unread", 0);
    /** `unread` counts the messages up to this seq (a head's lastSeq or an applied message). */
    __publicField(this, "countedTo", 0n);
    __publicField(this, "last");
    __publicField(this, "left", false);
    /** ms: newest activity (for "newest first"), from heads and messages. */
    __publicField(this, "activity", 0n);
    /** False until the first page was pulled: pushes are held until then. */
    __publicField(this, "initialized", false);
    /** `messages` hold base+1..contig, ascending, with no gap. */
    __publicField(this, "base", 0n);
    __publicField(this, "contig", 0n);
    __publicField(this, "messages", []);
    /** Messages above contig+1, waiting for the gap to close. */
    __publicField(this, "held", /* @__PURE__ */ new Map());
    this.ref = { kind: ref.kind, id: ref.id };
    this.key = convKey(ref);
  }
  /** True when messages wait above a gap. */
  get hasGap() {
    return this.held.size > 0;
  }
  /** The highest held seq above contig (0n when none). */
  get heldMax() {
    let m = 0n;
    for (const s of this.held.keys()) if (s > m) m = s;
    return m;
  }
  /**
   * Starts the contiguous range just below `first` (the lowest seq of the first page pulled,
   * or lastSeq + 1 when the conversation has nothing readable).
   */
  initAt(first) {
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
  raiseFloor(floor) {
    if (floor > this.floorSeq) this.floorSeq = floor;
    if (!this.initialized || floor - 1n <= this.contig) return { messages: [], recalled: [], duplicates: 0 };
    this.messages = [];
    this.base = floor - 1n;
    this.contig = this.base;
    return this.ingest([]);
  }
  /** Takes messages (pushes or a pull page) through the receive rule. */
  ingest(ms) {
    const out = { messages: [], recalled: [], duplicates: 0 };
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
    for (; ; ) {
      const next = this.held.get(this.contig + 1n);
      if (!next) break;
      this.held.delete(this.contig + 1n);
      this.apply(next, out);
    }
    for (const s of [...this.held.keys()]) if (s <= this.contig) this.held.delete(s);
    return out;
  }
  apply(m, out) {
    this.contig += 1n;
    this.messages.push(m);
    out.messages.push(m);
    const s = BigInt(m.seq);
    if (s > this.lastSeq) this.lastSeq = s;
    const ts = BigInt(m.serverTs);
    if (ts > this.activity) this.activity = ts;
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
  setUnread(unread, serverRead, lastSeq) {
    this.unread = unread;
    if (lastSeq > this.countedTo) this.countedTo = lastSeq;
    if (this.readSeq > serverRead) this.recount();
  }
  recount() {
    this.unread = this.messages.filter(
      (m) => m.kind === "NORMAL" && !m.recalled && m.sender !== this.me && BigInt(m.seq) > this.readSeq
    ).length;
    if (this.readSeq >= this.lastSeq) this.unread = 0;
  }
  /** A held message by seq (messages are contiguous, so this is an index). */
  find(seq) {
    if (seq <= this.base || seq > this.contig) return void 0;
    return this.messages[Number(seq - this.base - 1n)];
  }
  /**
   * Older messages from a history page (ascending, contiguous): prepended when they end right
   * at the base. Returns whether they were kept.
   */
  prepend(page) {
    if (!this.initialized || page.length === 0) return false;
    const hi = BigInt(page[page.length - 1].seq);
    const lo = BigInt(page[0].seq);
    if (hi !== this.base || hi - lo + 1n !== BigInt(page.length)) return false;
    this.messages = page.concat(this.messages);
    this.base = lo - 1n;
    return true;
  }
  /** The read mark moved to `seq` (this device or another of the user's): recount unread. */
  markRead(seq) {
    if (seq <= this.readSeq) return false;
    this.readSeq = seq;
    this.recount();
    return true;
  }
  view() {
    const c = {
      conv: { ...this.ref },
      lastSeq: this.lastSeq.toString(),
      floorSeq: this.floorSeq.toString(),
      readSeq: this.readSeq.toString(),
      peerReadSeq: this.peerReadSeq.toString(),
      peerRecvSeq: this.peerRecvSeq.toString(),
      unread: this.unread,
      left: this.left,
      contig: this.contig.toString()
    };
    if (this.last) c.last = { ...this.last };
    return c;
  }
};

// ../sdk/js/src/emitter.ts
var Emitter = class {
  constructor() {
    __publicField(this, "listeners", /* @__PURE__ */ new Map());
  }
  /** Subscribes to an event; returns the unsubscribe function. */
  on(event, f) {
    let s = this.listeners.get(event);
    if (!s) this.listeners.set(event, s = /* @__PURE__ */ new Set());
    s.add(f);
    return () => {
      s.delete(f);
    };
  }
  emit(event, v) {
    const s = this.listeners.get(event);
    if (!s) return;
    for (const f of [...s]) {
      try {
        f(v);
      } catch (e) {
        if (event !== "error") this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
    }
  }
};

// ../sdk/js/src/marks.ts
var MARK_PERIOD_MS = 1e3;
var realClock = {
  now: () => Date.now(),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (t) => clearTimeout(t)
};
var Marks = class {
  constructor(send, clock = realClock) {
    __publicField(this, "send", send);
    __publicField(this, "clock", clock);
    __publicField(this, "entries", /* @__PURE__ */ new Map());
    __publicField(this, "paused", true);
  }
  /** Asks for a mark up to `seq` (lower or equal marks than already asked are no-ops). */
  want(op, conv, seq) {
    const k = `${op}/${convKey(conv)}`;
    let e = this.entries.get(k);
    if (!e) this.entries.set(k, e = { op, conv: { ...conv }, want: 0n, sent: 0n, at: Number.NEGATIVE_INFINITY, timer: void 0 });
    if (seq > e.want) e.want = seq;
    this.schedule(e);
  }
  /** A mark that was sent but not answered (connection lost): send it again later. */
  unsent(op, conv, seq) {
    const e = this.entries.get(`${op}/${convKey(conv)}`);
    if (e && e.sent === seq) {
      e.sent = 0n;
      this.schedule(e);
    }
  }
  /** Offline: nothing is sent until resume(). */
  pause() {
    this.paused = true;
    for (const e of this.entries.values()) {
      if (e.timer !== void 0) this.clock.clearTimeout(e.timer);
      e.timer = void 0;
    }
  }
  /** Online again: marks asked for meanwhile go out. */
  resume() {
    this.paused = false;
    for (const e of this.entries.values()) this.schedule(e);
  }
  stop() {
    this.pause();
    this.entries.clear();
  }
  schedule(e) {
    if (this.paused || e.timer !== void 0 || e.want <= e.sent) return;
    const wait = Math.max(0, e.at + MARK_PERIOD_MS - this.clock.now());
    e.timer = this.clock.setTimeout(() => this.flush(e), wait);
  }
  flush(e) {
    e.timer = void 0;
    if (this.paused || e.want <= e.sent) return;
    const seq = e.want;
    if (this.send(e.op, e.conv, seq)) {
      e.sent = seq;
      e.at = this.clock.now();
    }
  }
};

// ../sdk/js/src/nodes.ts
var NODES_TIMEOUT_MS = 3e3;
async function pickNodes(o) {
  const fixed = o.url === void 0 ? [] : Array.isArray(o.url) ? o.url.slice() : [o.url];
  if (!o.nodesUrl) return { urls: fixed };
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), NODES_TIMEOUT_MS);
  try {
    const base = o.nodesUrl.replace(/\/+$/, "");
    const res = await fetch(`${base}/goim/nodes/weighted?platform=web`, { signal: ctl.signal });
    const j = await res.json();
    const d = j.data;
    if (j.code !== 0 || !d || !Array.isArray(d["nodes"])) return { urls: fixed };
    const secure = base.startsWith("https:");
    const port = Number(secure ? d["wss_port"] : d["ws_port"]);
    const urls = [];
    for (const h of d["nodes"]) {
      if (typeof h !== "string" || h === "") continue;
      const hostPort = /:\d+$/.test(h) || !port ? h : `${h}:${port}`;
      const u = `${secure ? "wss" : "ws"}://${hostPort}/sub`;
      if (!urls.includes(u)) urls.push(u);
    }
    for (const u of fixed) if (!urls.includes(u)) urls.push(u);
    const hb = Number(d["heartbeat"]);
    return hb > 0 ? { urls, heartbeatMs: hb * 1e3 } : { urls };
  } catch {
    return { urls: fixed };
  } finally {
    clearTimeout(timer);
  }
}

// ../sdk/js/src/options.ts
function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = b[6] & 15 | 64;
  b[8] = b[8] & 63 | 128;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ../sdk/js/src/wire.ts
var enc2 = new TextEncoder();
var dec = new TextDecoder();
function encodeBody(v) {
  return enc2.encode(JSON.stringify(v));
}
function parseBody(b) {
  const text = dec.decode(b).trim();
  if (text === "") return {};
  return obj(JSON.parse(text));
}
function utf8(b) {
  return dec.decode(b);
}
function decodeWelcome(j) {
  return {
    code: int(j["code"]),
    epoch: u64(j["epoch"]),
    serverTs: u64(j["serverTs"]),
    gapWaitMs: int(j["gapWaitMs"]),
    resyncMs: int(j["resyncMs"]),
    maxBody: int(j["maxBody"])
  };
}
function decodeSendAck(j) {
  return {
    code: int(j["code"]),
    clientMsgId: str(j["clientMsgId"]),
    seq: u64(j["seq"]),
    msgId: u64(j["msgId"]),
    serverTs: u64(j["serverTs"]),
    duplicate: bool(j["duplicate"]),
    stored: bool(j["stored"]),
    retryAfterMs: int(j["retryAfterMs"]),
    reason: str(j["reason"])
  };
}
function decodeHead(v) {
  const j = obj(v);
  const h = {
    conv: decodeConv(j["conv"]),
    lastSeq: u64(j["lastSeq"]),
    floorSeq: u64(j["floorSeq"]),
    readSeq: u64(j["readSeq"]),
    peerReadSeq: u64(j["peerReadSeq"]),
    peerRecvSeq: u64(j["peerRecvSeq"]),
    unread: int(j["unread"]),
    left: bool(j["left"]),
    updatedTs: u64(j["updatedTs"])
  };
  if (j["last"] !== void 0 && j["last"] !== null) h.last = decodeMessage2(j["last"]);
  return h;
}
function decodeSyncReply(j) {
  return {
    code: int(j["code"]),
    convs: Array.isArray(j["convs"]) ? j["convs"].map(decodeHead) : [],
    hasMore: bool(j["hasMore"]),
    cursor: str(j["cursor"]),
    serverTs: u64(j["serverTs"]),
    epoch: u64(j["epoch"]),
    reset: bool(j["reset"]),
    gapWaitMs: int(j["gapWaitMs"]),
    resyncMs: int(j["resyncMs"])
  };
}
function decodePullReply(j) {
  return {
    code: int(j["code"]),
    messages: Array.isArray(j["messages"]) ? j["messages"].map(decodeMessage2) : [],
    hasMore: bool(j["hasMore"]),
    nextSeq: u64(j["nextSeq"]),
    floorSeq: u64(j["floorSeq"]),
    lastSeq: u64(j["lastSeq"])
  };
}
function decodeMembersReply(j) {
  const ms = Array.isArray(j["members"]) ? j["members"] : [];
  return {
    code: int(j["code"]),
    members: ms.map((v) => {
      const m = obj(v);
      return { uid: u64(m["uid"]), role: int(m["role"]), readSeq: u64(m["readSeq"]) };
    }),
    cursor: str(j["cursor"]),
    hasMore: bool(j["hasMore"])
  };
}
function decodePush(j) {
  return Array.isArray(j["messages"]) ? j["messages"].map(decodeMessage2) : [];
}
var EVENT_TYPES = [
  "TYPE_UNSPECIFIED",
  "READ",
  "DELIVERED",
  "TYPING",
  "CONV_ADDED",
  "CONV_REMOVED",
  "DEVICE_ONLINE",
  "DEVICE_OFFLINE"
];
function decodeEvent(j) {
  const t = j["type"];
  const type = typeof t === "number" ? EVENT_TYPES[t] ?? "TYPE_UNSPECIFIED" : EVENT_TYPES.includes(str(t)) ? t : "TYPE_UNSPECIFIED";
  return {
    type,
    conv: decodeConv(j["conv"]),
    uid: u64(j["uid"]),
    seq: u64(j["seq"]),
    ts: u64(j["ts"]),
    platform: typeof j["platform"] === "number" ? String(j["platform"]) : str(j["platform"]),
    typing: bool(j["typing"])
  };
}
function decodeKick(j) {
  return { code: int(j["code"]), reason: str(j["reason"]), byPlatform: str(j["byPlatform"]) };
}

// ../sdk/js/src/client.ts
var SYNC_PAGE = 100;
var PULL_PAGE = 100;
var RETRY_CODES = /* @__PURE__ */ new Set([429, 500, 503, 504]);
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
var StarlingClient = class extends Emitter {
  constructor(opts) {
    super();
    __publicField(this, "opts");
    __publicField(this, "_state", "idle");
    __publicField(this, "convs", /* @__PURE__ */ new Map());
    __publicField(this, "conn");
    /** Resolved when a connection is authenticated; replaced after each loss. */
    __publicField(this, "ready");
    __publicField(this, "readyResolve");
    __publicField(this, "readyReject");
    /** The connection `ready` resolved with (undefined while it is pending). */
    __publicField(this, "readyConn");
    /** A CONV_ADDED/REMOVED came while syncing: sync again once online. */
    __publicField(this, "resyncWanted", false);
    /** The sync pass running on an online connection, if any (see sync()). */
    __publicField(this, "syncing");
    __publicField(this, "syncAgain", false);
    __publicField(this, "running", false);
    /** Pushes held while a connection syncs (im.md §5.4 step 3; gim #46). */
    __publicField(this, "holding");
    __publicField(this, "since", "0");
    __publicField(this, "epoch", "0");
    __publicField(this, "gapWaitMs", 1e3);
    __publicField(this, "resyncMs", 3e5);
    __publicField(this, "resyncTimer");
    __publicField(this, "gapTimers", /* @__PURE__ */ new Map());
    /** Per conversation: the pull in progress (pulls of one conversation never overlap). */
    __publicField(this, "pulls", /* @__PURE__ */ new Map());
    __publicField(this, "marks");
    __publicField(this, "terminal");
    /** Counters, for tests and diagnostics. */
    __publicField(this, "stats", { connects: 0, duplicates: 0, gapPulls: 0, syncPasses: 0, pushesDropped: 0, reads: 0, recvs: 0 });
    if (!/^\d+$/.test(opts.mid)) throw new TypeError(`mid must be a decimal string, got ${JSON.stringify(opts.mid)}`);
    this.opts = { ...opts };
    this.marks = new Marks((op, conv, seq) => this.sendMark(op, conv, seq));
    this.newReady();
  }
  get state() {
    return this._state;
  }
  setState(s) {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }
  newReady() {
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => void 0);
  }
  // ---- connect loop -------------------------------------------------------------------------
  /** Starts connecting; reconnects by itself until close() or a kick. */
  connect() {
    if (this.running || this.terminal) return;
    this.running = true;
    void this.loop();
  }
  /** Stops: closes the connection, rejects waiting calls with ImError code 0. */
  close() {
    this.stop(new ImError(0, "client closed"), "closed");
  }
  stop(err, state) {
    if (this.terminal) return;
    this.terminal = err;
    this.running = false;
    this.readyReject(err);
    this.clearTimers();
    this.conn?.close(err.message);
    this.setState(state);
  }
  clearTimers() {
    clearTimeout(this.resyncTimer);
    for (const t of this.gapTimers.values()) clearTimeout(t);
    this.gapTimers.clear();
    this.marks.stop();
  }
  async loop() {
    const Ctor = this.opts.WebSocket ?? globalThis.WebSocket;
    if (!Ctor) {
      this.emit("error", new Error("no WebSocket: pass options.WebSocket (Node 20: the `ws` package)"));
      this.stop(new ImError(0, "no WebSocket constructor"), "closed");
      return;
    }
    const minMs = this.opts.reconnect?.minMs ?? 500;
    const maxMs = this.opts.reconnect?.maxMs ?? 3e4;
    let attempt = 0;
    let urlIndex = 0;
    let urls = [];
    let heartbeatMs = this.opts.heartbeatMs ?? 3e4;
    while (!this.terminal) {
      this.setState(this.stats.connects === 0 && attempt === 0 ? "connecting" : "reconnecting");
      if (urlIndex >= urls.length) {
        const picked = await pickNodes(this.opts);
        urls = picked.urls;
        if (picked.heartbeatMs && !this.opts.heartbeatMs) heartbeatMs = Math.min(3e4, picked.heartbeatMs);
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
  async session(Ctor, url, heartbeatMs) {
    const timeout = this.opts.connectTimeoutMs ?? 1e4;
    let closed;
    const ended = new Promise((r) => closed = r);
    const imToken = typeof this.opts.imToken === "function" ? await this.opts.imToken() : this.opts.imToken;
    if (this.terminal) return false;
    let opened;
    const conn = await Connection.open(Ctor, url, timeout, {
      onPacket: (p) => this.onPacket(p),
      onClose: () => {
        if (opened) this.lost(opened);
        closed();
      }
    });
    opened = conn;
    if (this.terminal) {
      conn.close("client closed");
      return false;
    }
    this.conn = conn;
    let online = false;
    try {
      const auth = {
        key: this.opts.key,
        room_id: this.opts.roomId ?? "",
        platform: this.opts.platform,
        accepts: this.opts.accepts ?? [],
        im: "json"
      };
      if (imToken) auth["im_token"] = imToken;
      const token2 = `{"mid":${this.opts.mid},${JSON.stringify(auth).slice(1)}`;
      const welcome = decodeWelcome(parseBody(await conn.auth(token2, timeout)));
      if (welcome.code !== 0) throw new ImError(welcome.code, "auth refused");
      if (welcome.gapWaitMs > 0) this.gapWaitMs = welcome.gapWaitMs;
      if (welcome.resyncMs > 0) this.resyncMs = welcome.resyncMs;
      conn.startHeartbeat(heartbeatMs, heartbeatMs * 3 + 1e3);
      this.stats.connects++;
      this.holding = [];
      this.setState("syncing");
      this.readyConn = conn;
      this.readyResolve(conn);
      this.resyncWanted = false;
      await this.syncPass(conn);
      const held = this.holding;
      this.holding = void 0;
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
      this.holding = void 0;
      conn.close("session ended");
      clearTimeout(this.resyncTimer);
      this.marks.pause();
    }
  }
  /** A connection ended: calls made from now on wait for the next one. */
  lost(conn) {
    if (this.conn === conn) this.conn = void 0;
    if (this.readyConn === conn) {
      this.readyConn = void 0;
      if (!this.terminal) this.newReady();
    }
  }
  scheduleResync() {
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => {
      const conn = this.conn;
      if (!conn || this._state !== "online") return;
      this.sync(conn).catch((e) => this.requestFailed(conn, e)).finally(() => {
        if (this.conn === conn && this._state === "online") this.scheduleResync();
      });
    }, this.resyncMs);
  }
  /** A sync or pull that failed: the connection is not trusted any more (it reconnects). */
  requestFailed(conn, e) {
    if (e instanceof ConnectionClosed || this.terminal) return;
    this.emit("error", e instanceof Error ? e : new Error(String(e)));
    conn.close(`request failed: ${String(e)}`);
  }
  // ---- sync and pulls (im.md §5.4 steps 3 and 4) -------------------------------------------
  async call(conn, op, body) {
    const p = await conn.request(op, encodeBody(body), this.opts.requestTimeoutMs ?? 1e4);
    return parseBody(p.body);
  }
  /**
   * A sync pass on an online connection (periodic, resync(), a directory event): one at a
   * time; asked for during one, one more pass follows it.
   */
  sync(conn) {
    if (this.syncing?.conn === conn) {
      this.syncAgain = true;
      return this.syncing.done;
    }
    const run = async () => {
      try {
        do {
          this.syncAgain = false;
          await this.syncPass(conn);
        } while (this.syncAgain && conn.isOpen);
      } finally {
        if (this.syncing?.conn === conn) this.syncing = void 0;
      }
    };
    const done = run();
    this.syncing = { conn, done };
    return done;
  }
  /** IM_SYNC pages from `since`, then the pulls the heads call for. */
  async syncPass(conn) {
    this.stats.syncPasses++;
    let cursor = "";
    let resets = 0;
    const stale = [];
    let r;
    for (; ; ) {
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
  wipe() {
    for (const t of this.gapTimers.values()) clearTimeout(t);
    this.gapTimers.clear();
    this.convs.clear();
  }
  convState(ref) {
    const k = convKey(ref);
    let cs = this.convs.get(k);
    if (!cs) this.convs.set(k, cs = new ConvState(ref, this.opts.mid));
    return cs;
  }
  /**
   * Brings one conversation up to date, one pull at a time per conversation: the newest page
   * (backward) the first time, then forward pages from contig + 1 while the server has more
   * or messages are held above a gap.
   */
  catchUp(conn, cs) {
    const prev = this.pulls.get(cs.key) ?? Promise.resolve();
    const next = prev.catch(() => void 0).then(() => this.pullNow(conn, cs));
    this.pulls.set(cs.key, next);
    void next.finally(() => {
      if (this.pulls.get(cs.key) === next) this.pulls.delete(cs.key);
    }).catch(() => void 0);
    return next;
  }
  async pullNow(conn, cs) {
    try {
      await this.pullPages(conn, cs);
    } catch (e) {
      if (!(e instanceof ImError)) throw e;
      this.emit("error", e);
      return;
    }
    this.armGap(cs);
  }
  async pullPages(conn, cs) {
    if (!conn.isOpen || this.convs.get(cs.key) !== cs) return;
    if (!cs.initialized) {
      const r = await this.pull(conn, cs.ref, "BACKWARD", "0", this.opts.initialPage ?? 50);
      this.publish(cs, cs.raiseFloor(BigInt(r.floorSeq)));
      const page = r.messages.slice().sort((a, b) => BigInt(a.seq) < BigInt(b.seq) ? -1 : 1);
      if (!cs.initialized) cs.initAt(page.length > 0 ? BigInt(page[0].seq) : BigInt(r.lastSeq) + 1n);
      if (BigInt(r.lastSeq) > cs.lastSeq) cs.lastSeq = BigInt(r.lastSeq);
      this.publish(cs, cs.ingest(page));
    }
    for (; ; ) {
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
  async pull(conn, conv, dir, fromSeq, limit) {
    const r = decodePullReply(await this.call(conn, Op.IM_PULL, { conv: encodeConv(conv), dir, fromSeq, limit }));
    if (r.code !== 0) throw new ImError(r.code, `IM_PULL ${dir} ${conv.kind}:${conv.id} from ${fromSeq}`);
    return r;
  }
  // ---- pushes and events ------------------------------------------------------------------
  onPacket(p) {
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
          if (p.op >= 1e3) this.emit("room", { op: p.op, body: p.body, text: utf8(p.body) });
      }
    } catch (e) {
      this.emit("error", new Error(`op ${p.op}: undecodable body: ${String(e)}`));
    }
  }
  onPush(ms) {
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
  takeMessages(ms) {
    const by = /* @__PURE__ */ new Map();
    for (const m of ms) {
      const k = convKey(m.conv);
      let l = by.get(k);
      if (!l) by.set(k, l = []);
      l.push(m);
    }
    for (const [, l] of by) {
      const cs = this.convState(l[0].conv);
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
  publish(cs, a) {
    this.stats.duplicates += a.duplicates;
    for (const m of a.messages) this.emit("message", m);
    for (const t of a.recalled) this.emit("recall", t);
    if (a.messages.length > 0) {
      this.emit("conversation", cs.view());
      if (this.opts.autoDelivered !== false) this.marks.want(Op.IM_RECV, cs.ref, cs.contig);
    }
  }
  /** A gap open for gapWaitMs is pulled (im.md §5.4 step 2). */
  armGap(cs) {
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
        if (!cs.hasGap || !conn) return;
        if (this.holding) {
          this.armGap(cs);
          return;
        }
        this.stats.gapPulls++;
        this.catchUp(conn, cs).catch((e) => this.requestFailed(conn, e));
      }, this.gapWaitMs)
    );
  }
  onEvent(e) {
    const mine = e.uid === this.opts.mid;
    switch (e.type) {
      case "READ":
      case "DELIVERED": {
        const cs = this.convs.get(convKey(e.conv));
        const seq = BigInt(e.seq);
        let changed = false;
        if (!cs) {
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
  sendMark(op, conv, seq) {
    const conn = this.conn;
    if (!conn || this._state !== "online") return false;
    if (op === Op.IM_READ) this.stats.reads++;
    else this.stats.recvs++;
    this.call(conn, op, { conv: encodeConv(conv), seq: seq.toString() }).then((r) => {
      const code = Number(r["code"] ?? 0);
      if (code !== 0) this.emit("error", new ImError(code, `mark op ${op} ${convKey(conv)} ${seq}: ${String(r["reason"] ?? "")}`));
    }).catch((e) => {
      this.marks.unsent(op, conv, seq);
      if (!(e instanceof ConnectionClosed)) this.emit("error", e instanceof Error ? e : new Error(String(e)));
    });
    return true;
  }
  // ---- public calls -----------------------------------------------------------------------
  /** The authenticated connection, waiting for one; rejects once the client is closed or kicked. */
  connection() {
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
  async acked(op, body, own) {
    const bytes = encodeBody(body);
    const timeout = this.opts.sendTimeoutMs ?? 5e3;
    const minMs = this.opts.sendRetry?.minMs ?? 100;
    const maxMs = this.opts.sendRetry?.maxMs ?? 3e4;
    const retryCeiling = (attempt) => Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
    for (let attempt = 0; ; attempt++) {
      const conn = await this.connection();
      let ack;
      try {
        const reply = conn.request(op, bytes, timeout);
        if (this.opts.testHooks?.dropAfterSend?.(String(body["clientMsgId"]))) conn.close("test hook: dropAfterSend");
        ack = decodeSendAck(parseBody((await reply).body));
      } catch (e) {
        if (!(e instanceof RequestTimeout || e instanceof ConnectionClosed)) throw e;
        await sleep(Math.random() * retryCeiling(attempt));
        if (this.terminal) throw this.terminal;
        continue;
      }
      if (ack.code === 0) {
        if (!this.terminal) {
          const m = own(ack);
          const cs = this.convState(m.conv);
          if (!cs.initialized && m.seq === "1") cs.initAt(1n);
          this.takeMessages([m]);
        }
        return { seq: ack.seq, msgId: ack.msgId, serverTs: ack.serverTs, duplicate: ack.duplicate };
      }
      if (!RETRY_CODES.has(ack.code)) throw new ImError(ack.code, ack.reason || "refused", ack.retryAfterMs || void 0);
      await sleep(ack.retryAfterMs + Math.random() * retryCeiling(attempt));
      if (this.terminal) throw this.terminal;
    }
  }
  /**
   * Sends a message; resolves once the server acknowledged it (SendAck code 0 or duplicate),
   * retrying with the same clientMsgId; rejects with ImError on 400/403/404/409/410/413. The
   * message also arrives through "message" like any other.
   */
  send(conv, content, o = {}) {
    const clientMsgId = o.clientMsgId ?? uuid();
    const contentType = o.contentType ?? 1;
    const mentions = o.mentions ?? [];
    const refSeq = o.refSeq ?? "0";
    return this.acked(
      Op.IM_SEND,
      { clientMsgId, conv: encodeConv(conv), contentType, content, mentions, refSeq },
      (ack) => this.own(conv, ack, { clientMsgId, kind: "NORMAL", contentType, content, refSeq, mentions })
    );
  }
  /** Recalls `seq` (im.md §1.7); resolves with the recall event's seq. Same retry rules as send. */
  recall(conv, seq) {
    const clientMsgId = uuid();
    return this.acked(
      Op.IM_RECALL,
      { conv: encodeConv(conv), seq, clientMsgId },
      (ack) => this.own(conv, ack, { clientMsgId, kind: "RECALL", contentType: 0, content: "", refSeq: seq, mentions: [] })
    );
  }
  /** This connection's copy of a message it sent, from the ack. */
  own(conv, ack, m) {
    return {
      conv: { kind: conv.kind, id: conv.id },
      seq: ack.seq,
      msgId: ack.msgId,
      sender: this.opts.mid,
      serverTs: ack.serverTs,
      recalled: false,
      senderPlatform: this.opts.platform,
      ...m,
      mentions: m.mentions.slice()
    };
  }
  /** Marks read up to `seq`: applied locally now, IM_READ at most once per second per conversation. */
  markRead(conv, seq) {
    const cs = this.convs.get(convKey(conv));
    if (cs?.markRead(BigInt(seq))) this.emit("conversation", cs.view());
    this.marks.want(Op.IM_READ, conv, BigInt(seq));
  }
  /** Tells the conversation this user is (not) typing; dropped while offline. */
  typing(conv, typing) {
    const conn = this.conn;
    if (!conn || this._state !== "online") return;
    this.call(conn, Op.IM_TYPING, { conv: encodeConv(conv), typing }).catch(() => void 0);
  }
  /**
   * Older messages: IM_PULL BACKWARD from `beforeSeq` (exclusive; "0" = the newest), ascending.
   * When they end right below what messages(conv) holds, they are prepended to it.
   */
  async history(conv, beforeSeq, limit = 50) {
    const conn = await this.connection();
    const r = await this.pull(conn, conv, "BACKWARD", beforeSeq, limit);
    const page = r.messages.slice().sort((a, b) => BigInt(a.seq) < BigInt(b.seq) ? -1 : 1);
    const cs = this.convs.get(convKey(conv));
    if (cs && cs.prepend(page)) return cs.messages.slice(0, page.length);
    return page;
  }
  /** A group's members (IM_MEMBERS, every page), with read marks when the server shows them. */
  async members(gid) {
    const out = [];
    let cursor = "";
    for (; ; ) {
      const conn = await this.connection();
      const r = decodeMembersReply(await this.call(conn, Op.IM_MEMBERS, { gid, cursor, limit: 1e3 }));
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
  async resync() {
    const conn = this.conn;
    if (!conn || this._state !== "online") return;
    await this.sync(conn).catch((e) => this.requestFailed(conn, e));
  }
  /** goim's room change (op 12); kept for reconnects. */
  changeRoom(roomId) {
    this.opts.roomId = roomId;
    this.conn?.send(Op.CHANGE_ROOM, new TextEncoder().encode(roomId));
  }
  /** Every known conversation, newest activity first. */
  conversations() {
    return [...this.convs.values()].sort((a, b) => a.activity === b.activity ? 0 : a.activity > b.activity ? -1 : 1).map((c) => c.view());
  }
  /** The messages held for `conv`: contiguous, ascending seq (RECALL events included). */
  messages(conv) {
    return this.convs.get(convKey(conv))?.messages.slice() ?? [];
  }
  /** One conversation's local view, if known. */
  conversation(conv) {
    return this.convs.get(convKey(conv))?.view();
  }
};

// src/api.ts
var ApiError = class extends Error {
  constructor(code, message) {
    super(message);
    __publicField(this, "code", code);
  }
};
async function call(method, path, body, token2) {
  const headers = {};
  if (body !== void 0) headers["Content-Type"] = "application/json";
  if (token2) headers["Authorization"] = `Bearer ${token2}`;
  const r = await fetch(path, {
    method,
    headers,
    body: body === void 0 ? void 0 : JSON.stringify(body)
  });
  let env;
  try {
    env = await r.json();
  } catch {
    throw new ApiError(r.status, `${method} ${path}: HTTP ${r.status}`);
  }
  if (env.code !== 0) throw new ApiError(env.code ?? r.status, env.message || `HTTP ${r.status}`);
  return env.data;
}
var appConfig = () => call("GET", "/app/api/config");
var signin = (uid, name) => call("POST", "/app/api/signin", { uid, name: name || void 0 });
var userName = (token2, uid) => call("GET", `/app/api/users/${encodeURIComponent(uid)}`, void 0, token2);
var groupInfo = (token2, gid) => call(
  "GET",
  `/app/api/groups/${encodeURIComponent(gid)}`,
  void 0,
  token2
);
var createGroup = (token2, name, members) => call("POST", "/app/api/groups", { name, members }, token2);
var addMembers = (token2, gid, uids) => call("POST", `/app/api/groups/${encodeURIComponent(gid)}/members`, { uids }, token2);
async function pushRoom(room, text) {
  const m = /^([^:/]+):\/\/(.+)$/.exec(room);
  if (!m) throw new ApiError(400, `room ${room}: expected type://id, e.g. live://1000`);
  const q = new URLSearchParams({ operation: "1000", type: m[1], room: m[2] });
  const r = await fetch(`/goim/push/room?${q}`, { method: "POST", body: text });
  const env = await r.json();
  if (env.code !== 0) throw new ApiError(env.code, env.message);
}

// src/store.ts
var cmpSeq = (a, b) => {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
};
var ConvState2 = class {
  constructor(conv) {
    __publicField(this, "conv", conv);
    __publicField(this, "bySeq", /* @__PURE__ */ new Map());
    __publicField(this, "pending", []);
    /** History reached the conversation's floor: nothing older to load. */
    __publicField(this, "atFloor", false);
    __publicField(this, "loading", false);
    /** GROUP: each other member's read mark, from read receipts (server: group_read_receipts_max). */
    __publicField(this, "readBy", /* @__PURE__ */ new Map());
    /** uid → when their typing indicator expires (ms, performance.now()). */
    __publicField(this, "typing", /* @__PURE__ */ new Map());
    /** GROUP: the seq of the SYSTEM message that added each member (they read from there on). */
    __publicField(this, "joinedAt", /* @__PURE__ */ new Map());
  }
  /** Adds or replaces (a recall turns a message into its tombstone); true when it changed. */
  put(m) {
    if (m.kind === "SYSTEM") this.noteJoins(m);
    const old = this.bySeq.get(m.seq);
    if (old && old.recalled === m.recalled && old.content === m.content) return false;
    this.bySeq.set(m.seq, m);
    this.pending = this.pending.filter((p) => p.clientMsgId !== m.clientMsgId || !m.clientMsgId);
    return true;
  }
  noteJoins(m) {
    try {
      const c = JSON.parse(m.content);
      if (c.type === "members_added" || c.type === "group_created")
        for (const u of c.uids ?? []) this.joinedAt.set(u, m.seq);
    } catch {
    }
  }
  /** Ascending by seq. */
  sorted() {
    return [...this.bySeq.values()].sort((a, b) => cmpSeq(a.seq, b.seq));
  }
  /** Raises `uid`'s read mark; true when it moved. */
  read(uid, seq) {
    const old = this.readBy.get(uid);
    if (old !== void 0 && cmpSeq(seq, old) <= 0) return false;
    this.readBy.set(uid, seq);
    return true;
  }
  /** How many others have read `seq` (members added after it never saw it). */
  readers(seq) {
    let n = 0;
    for (const [uid, s] of this.readBy)
      if (cmpSeq(s, seq) >= 0 && cmpSeq(this.joinedAt.get(uid) ?? "0", seq) <= 0) n++;
    return n;
  }
  lowest() {
    let low;
    for (const s of this.bySeq.keys()) if (low === void 0 || cmpSeq(s, low) < 0) low = s;
    return low;
  }
  highest() {
    let high;
    for (const s of this.bySeq.keys()) if (high === void 0 || cmpSeq(s, high) > 0) high = s;
    return high;
  }
};
var Store = class {
  constructor() {
    __publicField(this, "convs", /* @__PURE__ */ new Map());
  }
  all() {
    return [...this.convs.values()];
  }
  get(conv) {
    const k = convKey(conv);
    let c = this.convs.get(k);
    if (!c) {
      c = new ConvState2({ kind: conv.kind, id: conv.id });
      this.convs.set(k, c);
    }
    return c;
  }
};
function systemText(m, name) {
  try {
    const c = JSON.parse(m.content);
    const who = c.by && c.by !== "0" ? name(c.by) : "The system";
    const list = (c.uids ?? []).map(name).join(", ");
    switch (c.type) {
      case "group_created":
        return `${who} created the group${c.name ? ` “${c.name}”` : ""} with ${list}`;
      case "members_added":
        return `${who} added ${list}`;
      case "members_removed":
        return `${who} removed ${list}`;
      case "group_updated":
        return `${who} updated the group`;
      case "group_dissolved":
        return `${who} dissolved the group`;
      default:
        return m.content;
    }
  } catch {
    return m.content;
  }
}

// src/main.ts
var $ = (id) => document.getElementById(id);
var SESSION = "starling.session";
var DEVICE = "starling.device";
var PAGE = 30;
var TYPING_SHOWN_MS = 6e3;
var cfg;
var session;
var client;
var current = null;
var store = new Store();
var names = /* @__PURE__ */ new Map();
var titles = /* @__PURE__ */ new Map();
function el(tag, props = {}, data = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  for (const [k, v] of Object.entries(data)) e.setAttribute(k === "testid" ? "data-testid" : `data-${k}`, v);
  e.append(...children);
  return e;
}
var sameConv = (a, b) => !!a && a.kind === b.kind && a.id === b.id;
var uidList = (s) => s.split(/[\s,]+/).filter((x) => /^[1-9][0-9]*$/.test(x));
function nameOf(uid) {
  if (uid === session.uid) return "You";
  const n = names.get(uid);
  if (n === void 0) {
    names.set(uid, "");
    if (cfg.devSignin)
      userName(session.token, uid).then((u) => {
        names.set(uid, u.name);
        renderAll();
      }, () => {
      });
  }
  return n || `User ${uid}`;
}
function titleOf(conv) {
  if (conv.kind === "P2P") return nameOf(conv.id);
  if (conv.kind === "GROUP") {
    const k = convKey(conv);
    const t = titles.get(k);
    if (t === void 0) {
      titles.set(k, "");
      if (cfg.devSignin)
        groupInfo(session.token, conv.id).then((g) => {
          titles.set(k, g.name);
          renderAll();
        }, () => {
        });
    }
    return t || `Group ${conv.id}`;
  }
  return "Notices";
}
async function boot() {
  cfg = await appConfig();
  $("dev-banner").hidden = !cfg.devSignin;
  $("signin-name-row").hidden = !cfg.devSignin;
  $("signin-token-row").hidden = cfg.devSignin;
  $("signin-hint").textContent = cfg.devSignin ? "Development sign-in: any user id, no password." : "Paste an im_token your backend minted (POST /im/v1/tokens).";
  const saved = localStorage.getItem(SESSION);
  if (saved) {
    start(JSON.parse(saved));
  } else {
    $("signin-view").hidden = false;
  }
}
$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const uid = $("signin-uid").value.trim();
  $("signin-error").textContent = "";
  try {
    const s = cfg.devSignin ? await signin(uid, $("signin-name").value.trim()) : { uid, name: "", token: $("signin-token").value.trim(), expiresAt: "0" };
    localStorage.setItem(SESSION, JSON.stringify(s));
    start(s);
  } catch (e) {
    $("signin-error").textContent = String(e.message);
  }
});
$("signout").addEventListener("click", () => {
  client?.close();
  localStorage.removeItem(SESSION);
  location.reload();
});
var triesSinceOnline = 0;
async function token() {
  const left = Number(session.expiresAt) - Date.now();
  triesSinceOnline++;
  if (!cfg.devSignin && triesSinceOnline > 2) {
    $("side-error").textContent = "Not online yet: the server refuses this token (expired, revoked, or from another secret) or cannot be reached. Sign out and paste a new one.";
  }
  if (cfg.devSignin && (left < 36e5 || triesSinceOnline > 1)) {
    session = { ...await signin(session.uid), name: session.name };
    localStorage.setItem(SESSION, JSON.stringify(session));
  }
  return session.token;
}
function deviceKey() {
  let k = sessionStorage.getItem(DEVICE);
  if (!k) {
    k = `web-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem(DEVICE, k);
  }
  return k;
}
function start(s) {
  session = s;
  if (s.name) names.set(s.uid, s.name);
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  $("signout").hidden = false;
  $("me").textContent = `${s.name || "User " + s.uid} (uid ${s.uid})`;
  const room = $("room-id").value;
  $("room-current").textContent = room;
  client = new StarlingClient({
    url: cfg.wsUrl,
    mid: s.uid,
    key: deviceKey(),
    platform: "web",
    imToken: token,
    roomId: room,
    accepts: [1e3],
    reconnect: { minMs: 200, maxMs: 3e3 }
  });
  client.on("state", showState);
  client.on("message", onMessage);
  client.on("recall", (m) => {
    if (store.get(m.conv).put(m)) renderConv(m.conv);
  });
  client.on("conversation", () => {
    renderList();
    if (current) renderTicks();
  });
  client.on("receipt", (r) => {
    if (r.type === "read" && r.conv.kind === "GROUP" && r.uid !== session.uid) store.get(r.conv).read(r.uid, r.seq);
    if (current) renderTicks();
  });
  client.on("typing", (t) => {
    if (t.uid === session.uid) return;
    const c = store.get(t.conv);
    if (t.typing) c.typing.set(t.uid, performance.now() + TYPING_SHOWN_MS);
    else c.typing.delete(t.uid);
    renderTyping();
  });
  client.on("kick", (k) => showState("kicked", `${k.reason || "signed in elsewhere"} (${k.code})`));
  client.on("room", (p) => {
    const list = $("room-messages");
    list.append(el("li", { textContent: p.text }, { testid: "room-message" }));
    while (list.childElementCount > 100) list.firstElementChild?.remove();
    list.lastElementChild?.scrollIntoView({ block: "nearest" });
  });
  client.on("error", (e) => console.warn("starling:", e));
  client.connect();
  showState(client.state);
  renderList();
  setInterval(renderTyping, 1e3);
}
function showState(s, detail) {
  const e = $("conn-state");
  e.dataset.state = s;
  e.textContent = detail ? `${s}: ${detail}` : s;
  if (s === "online") {
    triesSinceOnline = 0;
    if ($("side-error").textContent?.startsWith("Not online yet")) $("side-error").textContent = "";
  }
  if (s === "online" && current) openConv(current);
}
function onMessage(m) {
  const c = store.get(m.conv);
  c.put(m);
  if (m.kind === "RECALL") {
    const t = c.bySeq.get(m.refSeq);
    if (t && !t.recalled) c.put({ ...t, recalled: true, content: "" });
  }
  if (m.kind === "SYSTEM" && m.conv.kind === "GROUP") titles.delete(convKey(m.conv));
  if (m.kind !== "RECALL") c.typing.delete(m.sender);
  if (sameConv(current, m.conv)) {
    renderConv(m.conv);
    markRead();
  }
}
function markRead() {
  if (!current || document.hidden) return;
  const high = store.get(current).highest();
  if (high) client.markRead(current, high);
}
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  void client?.resync().then(() => {
    renderList();
    if (current) openConv(current);
  });
  markRead();
});
function openConv(conv) {
  current = { kind: conv.kind, id: conv.id };
  const c = store.get(conv);
  for (const m of client.messages(conv)) c.put(m);
  $("chat-title").textContent = titleOf(conv);
  $("add-member").hidden = !(conv.kind === "GROUP" && cfg.devSignin);
  $("composer-input").disabled = false;
  $("composer").querySelector("button").disabled = false;
  $("pane-error").textContent = "";
  renderConv(conv, true);
  renderList();
  markRead();
  if (c.bySeq.size < PAGE) void loadOlder(c);
}
async function loadOlder(c) {
  if (c.loading || c.atFloor) return;
  c.loading = true;
  renderHistoryState(c);
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const before = c.lowest() ?? "0";
    const got = await client.history(c.conv, before, PAGE);
    for (const m of got) c.put(m);
    if (got.length < PAGE || c.lowest() === "1") c.atFloor = true;
  } catch (e) {
    $("pane-error").textContent = `history: ${e.message}`;
  } finally {
    c.loading = false;
  }
  if (sameConv(current, c.conv)) {
    renderConv(c.conv);
    box.scrollTop = box.scrollHeight - fromBottom;
    markRead();
  }
}
$("messages").addEventListener("scroll", () => {
  if (current && $("messages").scrollTop < 40) void loadOlder(store.get(current));
});
function tick(m, conv) {
  if (m.sender !== session.uid || !conv) return "";
  if (m.conv.kind === "GROUP") return store.get(m.conv).readers(m.seq) > 0 ? "read" : "sent";
  if (cmpSeq(m.seq, conv.peerReadSeq || "0") <= 0) return "read";
  if (cmpSeq(m.seq, conv.peerRecvSeq || "0") <= 0) return "delivered";
  return "sent";
}
var TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓ read", sending: "…", failed: "!" };
function messageRow(m, conv) {
  if (m.kind === "SYSTEM")
    return el(
      "li",
      { className: "system", textContent: systemText(m, nameOf) },
      { testid: "message", seq: m.seq, kind: "SYSTEM" }
    );
  const mine = m.sender === session.uid;
  const row = el(
    "li",
    { className: mine ? "msg mine" : "msg" },
    { testid: "message", seq: m.seq, sender: m.sender, recalled: String(m.recalled), kind: m.kind }
  );
  if (!mine && current?.kind !== "P2P") row.append(el("span", { className: "who", textContent: nameOf(m.sender) }));
  row.append(m.recalled ? el("span", { className: "text tombstone", textContent: mine ? "You recalled a message" : "This message was recalled" }, { testid: "message-text" }) : el("span", { className: "text", textContent: m.content }, { testid: "message-text" }));
  const time = new Date(Number(m.serverTs)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const meta = el("span", { className: "meta" }, {}, el("time", { textContent: time }));
  const t = tick(m, conv);
  const readers = t === "read" && m.conv.kind === "GROUP" ? store.get(m.conv).readers(m.seq) : 0;
  if (t) meta.append(el(
    "span",
    { className: `tick ${t}`, textContent: readers ? `✓✓ read by ${readers}` : TICKS[t], title: t },
    { testid: "message-status", status: t }
  ));
  if (mine && !m.recalled) {
    const b = el("button", { type: "button", className: "recall", textContent: "Recall", title: "Recall for everyone" }, { testid: "message-recall" });
    b.addEventListener("click", () => {
      client.recall(m.conv, m.seq).then(() => {
        const c = store.get(m.conv);
        const t2 = c.bySeq.get(m.seq);
        if (t2 && c.put({ ...t2, recalled: true, content: "" })) renderConv(m.conv);
      }, (e) => {
        $("pane-error").textContent = `recall: ${e.message}`;
      });
    });
    meta.append(b);
  }
  row.append(meta);
  return row;
}
function renderConv(conv, toBottom = false) {
  if (!sameConv(current, conv)) {
    renderList();
    return;
  }
  const c = store.get(conv);
  const box = $("messages");
  const atBottom = toBottom || box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const head = client.conversations().find((x) => sameConv(x.conv, conv));
  const list = $("message-list");
  list.replaceChildren(...c.sorted().filter((m) => m.kind !== "RECALL").map((m) => messageRow(m, head)));
  for (const p of c.pending) {
    const status = p.failed ? "failed" : "sending";
    list.append(el(
      "li",
      { className: "msg mine pending" },
      { testid: "message", pending: "true" },
      el("span", { className: "text", textContent: p.content }, { testid: "message-text" }),
      el("span", { className: "meta" }, {}, el(
        "span",
        { className: `tick ${status}`, textContent: TICKS[status], title: p.failed ?? status },
        { testid: "message-status", status }
      ))
    ));
  }
  renderHistoryState(c);
  renderTyping();
  if (atBottom) box.scrollTop = box.scrollHeight;
  renderList();
}
function renderTicks() {
  if (current) renderConv(current);
}
function renderHistoryState(c) {
  const e = $("history-state");
  e.dataset.state = c.loading ? "loading" : c.atFloor ? "start" : "more";
  e.textContent = c.loading ? "Loading earlier messages…" : c.atFloor ? "Start of the conversation" : "Scroll up for earlier messages";
}
function renderTyping() {
  if (!current) return;
  const c = store.get(current);
  const now = performance.now();
  for (const [u, until] of c.typing) if (until < now) c.typing.delete(u);
  const who = [...c.typing.keys()].map(nameOf);
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}
function renderList() {
  if (!client) return;
  const items = conversations();
  $("conv-list").replaceChildren(...items.map((c) => {
    const last = c.last;
    const preview = !last ? "" : last.recalled ? "Message recalled" : last.kind === "SYSTEM" ? systemText(last, nameOf) : last.kind === "RECALL" ? "Message recalled" : `${last.sender === session.uid ? "You: " : ""}${last.content}`;
    const unread = sameConv(current, c.conv) ? 0 : c.unread;
    const b = el(
      "button",
      { type: "button", className: sameConv(current, c.conv) ? "conv active" : "conv" },
      { testid: "conv-item", conv: convKey(c.conv), unread: String(unread) },
      el("span", { className: "conv-title", textContent: titleOf(c.conv) }, { testid: "conv-title" }),
      el("span", { className: "conv-last", textContent: preview }, { testid: "conv-last" })
    );
    if (unread > 0) b.append(el("span", { className: "badge", textContent: String(unread), ariaLabel: `${unread} unread` }, { testid: "conv-unread" }));
    if (sameConv(current, c.conv)) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => openConv(c.conv));
    return el("li", {}, {}, b);
  }));
}
function conversations() {
  const out = client.conversations().filter((c) => !c.left || sameConv(current, c.conv));
  const seen = new Set(out.map((c) => convKey(c.conv)));
  for (const c of store.all()) {
    if (!seen.has(convKey(c.conv)) && (c.bySeq.size > 0 || sameConv(current, c.conv)))
      out.push({ conv: c.conv, lastSeq: "0", floorSeq: "0", readSeq: "0", peerReadSeq: "0", peerRecvSeq: "0", unread: 0, left: false, contig: "0" });
  }
  const newest = (c) => {
    const high = store.get(c.conv).highest();
    const mine = high ? store.get(c.conv).bySeq.get(high) : void 0;
    return mine && (!c.last || cmpSeq(mine.seq, c.last.seq) > 0) ? { ...c, last: mine } : c;
  };
  const ts = (c) => BigInt(c.last?.serverTs ?? "0");
  return out.map(newest).sort((a, b) => ts(a) === ts(b) ? 0 : ts(a) > ts(b) ? -1 : 1);
}
function renderAll() {
  renderList();
  if (current) {
    $("chat-title").textContent = titleOf(current);
    renderConv(current);
  }
}
var typingSent = 0;
$("composer-input").addEventListener("input", () => {
  if (!current) return;
  const now = Date.now();
  if (now - typingSent > 3e3) {
    typingSent = now;
    client.typing(current, true);
  }
});
$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("composer-input");
  const text = input.value;
  if (!current || !text.trim()) return;
  input.value = "";
  const conv = current;
  const c = store.get(conv);
  const clientMsgId = uuid();
  const p = { clientMsgId, content: text };
  c.pending.push(p);
  renderConv(conv, true);
  typingSent = 0;
  client.typing(conv, false);
  client.send(conv, text, { clientMsgId }).then(
    (ack) => {
      c.put({
        conv,
        seq: ack.seq,
        msgId: ack.msgId,
        sender: session.uid,
        clientMsgId,
        kind: "NORMAL",
        contentType: 1,
        content: text,
        serverTs: ack.serverTs,
        refSeq: "0",
        recalled: false,
        mentions: [],
        senderPlatform: "web"
      });
      c.pending = c.pending.filter((x) => x !== p);
      renderConv(conv);
    },
    (e) => {
      p.failed = e.message;
      $("pane-error").textContent = `not sent: ${e.message}`;
      renderConv(conv);
    }
  );
});
$("new-chat").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const uid = $("new-chat-uid").value.trim();
  if (uid === session.uid) {
    $("side-error").textContent = "That is you.";
    return;
  }
  $("side-error").textContent = "";
  $("new-chat").reset();
  openConv({ kind: "P2P", id: uid });
});
$("new-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("side-error").textContent = "";
  if (!cfg.devSignin) {
    $("side-error").textContent = "Groups are created by your backend (POST /im/v1/groups).";
    return;
  }
  try {
    const g = await createGroup(
      session.token,
      $("new-group-name").value.trim(),
      uidList($("new-group-members").value)
    );
    titles.set(convKey({ kind: "GROUP", id: g.gid }), g.name);
    $("new-group").reset();
    openConv({ kind: "GROUP", id: g.gid });
  } catch (e) {
    $("side-error").textContent = `group: ${e.message}`;
  }
});
$("add-member").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current || current.kind !== "GROUP") return;
  try {
    const asked = uidList($("add-member-uid").value);
    const { added } = await addMembers(session.token, current.id, asked);
    const already = asked.filter((u) => !added.includes(u));
    $("pane-error").textContent = already.length ? `already members: ${already.join(", ")}` : "";
    $("add-member").reset();
  } catch (e) {
    $("pane-error").textContent = `add member: ${e.message}`;
  }
});
$("room-join").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("room-id").value.trim();
  client.changeRoom(room);
  $("room-current").textContent = room;
  $("room-messages").replaceChildren();
});
$("room-push").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("room-text");
  try {
    await pushRoom($("room-current").textContent || "live://1000", input.value);
    input.value = "";
  } catch (e) {
    $("pane-error").textContent = `room push: ${e.message}`;
  }
});
boot().catch((e) => {
  document.body.prepend(el("p", { className: "error", textContent: `Cannot start: ${e.message}` }, { testid: "boot-error" }));
});

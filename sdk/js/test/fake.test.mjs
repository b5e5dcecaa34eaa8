// The client against a scripted comet (a `ws` server speaking goim packets): what a real
// server cannot be made to do on demand. Bad input from the server (undecodable body, broken
// packet, text frame), a send never answered (resent with the same id), 503 then OK, the
// pause before a resend (retryAfterMs plus jittered backoff), a
// store reset (wipe and resync from 0), a silent peer (heartbeat watchdog), and heartbeats.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { StarlingClient } from "../dist/index.js";
import { Op, decodeMessage, encodePacket } from "../dist/packet.js";
import { record, sleep, waitFor } from "./harness.mjs";

const enc = new TextEncoder();
const dec = new TextDecoder();
const json = (v) => enc.encode(JSON.stringify(v));

/**
 * A fake comet. `on(op, body, reply, sock)` may answer with `reply(op, obj)`; by default auth,
 * heartbeat and IM_SYNC (an empty directory) are answered.
 */
class Fake {
  constructor(handler = () => false) {
    this.handler = handler;
    this.conns = [];
    this.seen = [];
    this.wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    this.wss.on("connection", (sock) => {
      this.conns.push(sock);
      sock.on("message", (data) => {
        for (const p of decodeMessage(new Uint8Array(data))) {
          const raw = dec.decode(p.body);
          const body = p.body.length ? JSON.parse(raw) : {};
          this.seen.push({ op: p.op, body, raw, conn: this.conns.length });
          const reply = (op, obj) => sock.send(encodePacket(op, p.seq, obj === undefined ? new Uint8Array(0) : json(obj)));
          if (this.handler(p.op, body, reply, sock)) continue;
          if (p.op === Op.AUTH) reply(Op.AUTH_REPLY, { code: 0, epoch: "1", gapWaitMs: 100, resyncMs: 600000 });
          else if (p.op === Op.HEARTBEAT) reply(Op.HEARTBEAT_REPLY);
          else if (p.op === Op.IM_SYNC) reply(Op.IM_SYNC_REPLY, { code: 0, serverTs: "1000", epoch: "1" });
        }
      });
    });
  }
  get url() {
    return `ws://127.0.0.1:${this.wss.address().port}/sub`;
  }
  /** A push to the newest connection: raw bytes as one WebSocket message. */
  push(bytes) {
    this.conns.at(-1).send(bytes);
  }
  close() {
    for (const c of this.conns) c.terminate();
    this.wss.close();
  }
}

const fakes = [];
const clients = [];
after(() => {
  for (const c of clients) c.close();
  for (const f of fakes) f.close();
});

async function setup(handler, opts = {}) {
  const fake = new Fake(handler);
  fakes.push(fake);
  await new Promise((r) => fake.wss.once("listening", r));
  const c = new StarlingClient({ url: fake.url, mid: "1", key: "k", platform: "web", WebSocket, reconnect: { minMs: 20, maxMs: 100 }, ...opts });
  clients.push(c);
  const errors = record(c, "error");
  c.connect();
  await waitFor("online", () => c.state === "online");
  return { fake, c, errors };
}

const msg = (seq) => ({ conv: { kind: "P2P", id: "2" }, seq: String(seq), msgId: String(seq), sender: "2", kind: "NORMAL", content: `m${seq}`, serverTs: "5" });

test("auth carries goim's token with the IM opt-in; pushes inside op 9 are applied", async () => {
  const { fake, c } = await setup(undefined, { roomId: "live://7", accepts: [1000, 1001], imToken: "jwt" });
  const auth = fake.seen.find((s) => s.op === Op.AUTH).body;
  assert.deepEqual(auth, { mid: 1, key: "k", room_id: "live://7", platform: "web", accepts: [1000, 1001], im: "json", im_token: "jwt" });
  const events = record(c, "message");
  // The conversation is new: its first page is pulled (BACKWARD from 0).
  fake.handler = (op, body, reply) => {
    if (op !== Op.IM_PULL) return false;
    assert.equal(body.dir, "BACKWARD");
    reply(Op.IM_PULL_REPLY, { code: 0, messages: [msg(1)], floorSeq: "1", lastSeq: "1" });
    return true;
  };
  const batch = Uint8Array.from([...encodePacket(Op.IM_MSG, 0, json({ messages: [msg(1)] })), ...encodePacket(Op.IM_MSG, 0, json({ messages: [msg(2)] }))]);
  fake.push(encodePacket(Op.RAW, 0, batch));
  await waitFor("two messages", () => events.length === 2);
  assert.deepEqual(events.map((m) => m.seq), ["1", "2"]);
});

test("a mid above 2^53 keeps every digit in goim's token (a JSON number)", async () => {
  const { fake } = await setup(undefined, { mid: "9007199254740993" });
  assert.match(fake.seen.find((s) => s.op === Op.AUTH).raw, /^\{"mid":9007199254740993,"key":"k",/);
});

test("an undecodable push body: an error event, the connection kept", async () => {
  const { fake, c, errors } = await setup();
  fake.push(encodePacket(Op.IM_MSG, 0, enc.encode("{not json")));
  await waitFor("the error", () => errors.length === 1);
  assert.match(errors[0].message, /op 41: undecodable body/);
  await sleep(100);
  assert.equal(c.state, "online");
  assert.equal(c.stats.connects, 1);
});

test("a broken packet or a text frame: the connection is closed and made again", async () => {
  const { fake, c } = await setup();
  const bad = encodePacket(Op.IM_MSG, 0, enc.encode("{}"));
  new DataView(bad.buffer).setUint32(0, 999); // packLen past the end
  fake.push(bad);
  await waitFor("reconnected", () => c.stats.connects === 2 && c.state === "online");
  fake.conns.at(-1).send("a text frame");
  await waitFor("reconnected again", () => c.stats.connects === 3 && c.state === "online");
});

test("a send never answered is resent with the same clientMsgId; 503 is retried; 409 is final", async () => {
  let sends = 0;
  const { fake, c } = await setup(
    (op, body, reply) => {
      if (op !== Op.IM_SEND) return false;
      sends++;
      if (body.content === "silent" && sends === 1) return true; // no answer
      if (body.content === "busy" && sends === 1) reply(Op.IM_SEND_ACK, { code: 503, retryAfterMs: 30 });
      else if (body.content === "clash") reply(Op.IM_SEND_ACK, { code: 409, reason: "reused id" });
      else reply(Op.IM_SEND_ACK, { code: 0, clientMsgId: body.clientMsgId, seq: "1", msgId: "9", serverTs: "5" });
      return true;
    },
    { sendTimeoutMs: 200 },
  );
  const r = await c.send({ kind: "P2P", id: "2" }, "silent");
  assert.equal(r.seq, "1");
  const ids = fake.seen.filter((s) => s.op === Op.IM_SEND).map((s) => s.body.clientMsgId);
  assert.equal(ids.length, 2);
  assert.equal(ids[0], ids[1], "the same id on the resend");
  sends = 0;
  await c.send({ kind: "P2P", id: "2" }, "busy");
  assert.equal(sends, 2);
  sends = 0;
  await assert.rejects(c.send({ kind: "P2P", id: "2" }, "clash"), (e) => e.code === 409 && /reused id/.test(e.message));
  assert.equal(sends, 1, "not retried");
});

test("a resend waits for retryAfterMs plus a jittered backoff, after a timeout too", async () => {
  let sends = 0;
  const at = [];
  const { c } = await setup(
    (op, body, reply) => {
      if (op !== Op.IM_SEND) return false;
      sends++;
      at.push(performance.now());
      if (body.content === "silent" && sends === 1) return true; // no answer
      if (body.content === "busy" && sends === 1) reply(Op.IM_SEND_ACK, { code: 503, retryAfterMs: 30 });
      else reply(Op.IM_SEND_ACK, { code: 0, clientMsgId: body.clientMsgId, seq: "1", msgId: "9", serverTs: "5" });
      return true;
    },
    { sendTimeoutMs: 200, sendRetry: { minMs: 300, maxMs: 300 } },
  );
  const random = Math.random;
  Math.random = () => 1; // the whole jitter range: exactly the ceiling (300 ms)
  try {
    await c.send({ kind: "P2P", id: "2" }, "silent");
    assert.equal(sends, 2);
    assert.ok(at[1] - at[0] >= 200 + 300 - 5, `resent ${at[1] - at[0]} ms after the first (timeout + backoff)`);
    sends = 0;
    at.length = 0;
    await c.send({ kind: "P2P", id: "2" }, "busy");
    assert.equal(sends, 2);
    assert.ok(at[1] - at[0] >= 30 + 300 - 5, `resent ${at[1] - at[0]} ms after the 503 (retryAfterMs + backoff)`);
  } finally {
    Math.random = random;
  }
});

test("a SyncReply with reset: the local cache is dropped and the directory synced from 0", async () => {
  let syncs = 0;
  const { fake, c } = await setup((op, body, reply) => {
    if (op === Op.IM_PULL) {
      reply(Op.IM_PULL_REPLY, { code: 0, messages: [msg(1)], floorSeq: "1", lastSeq: "1" });
      return true;
    }
    if (op !== Op.IM_SYNC) return false;
    syncs++;
    const head = { conv: { kind: "P2P", id: "2" }, lastSeq: "1", floorSeq: "1" };
    if (syncs === 1) reply(Op.IM_SYNC_REPLY, { code: 0, convs: [head], serverTs: "1000", epoch: "1" });
    else if (syncs === 2) reply(Op.IM_SYNC_REPLY, { code: 0, reset: true, epoch: "2" });
    else reply(Op.IM_SYNC_REPLY, { code: 0, convs: [], serverTs: "2000", epoch: "2" });
    return true;
  });
  await waitFor("the conversation", () => c.messages({ kind: "P2P", id: "2" }).length === 1);
  const resets = record(c, "reset");
  fake.conns.at(-1).terminate(); // a reconnect syncs again
  await waitFor("reset handled", () => resets.length === 1 && c.state === "online");
  assert.deepEqual(resets[0], { epoch: "2" });
  const sent = fake.seen.filter((s) => s.op === Op.IM_SYNC).map((s) => [s.body.since, s.body.epoch]);
  assert.deepEqual(sent, [["0", "0"], ["1000", "1"], ["0", "2"]]);
  assert.deepEqual(c.conversations(), [], "wiped");
});

test("a pull refused with an IM code: an error event, the connection and the other conversations go on", async () => {
  const head = (id) => ({ conv: { kind: "GROUP", id }, lastSeq: "1", floorSeq: "1" });
  const { c, errors } = await setup((op, body, reply) => {
    if (op === Op.IM_SYNC) {
      reply(Op.IM_SYNC_REPLY, { code: 0, convs: [head("7"), head("8")], serverTs: "1000", epoch: "1" });
      return true;
    }
    if (op !== Op.IM_PULL) return false;
    if (body.conv.id === "7") reply(Op.IM_PULL_REPLY, { code: 403, reason: "not a member" });
    else reply(Op.IM_PULL_REPLY, { code: 0, messages: [{ ...msg(1), conv: { kind: "GROUP", id: "8" } }], lastSeq: "1", floorSeq: "1" });
    return true;
  });
  assert.equal(c.messages({ kind: "GROUP", id: "8" }).length, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 403);
  await sleep(100);
  assert.equal(c.state, "online");
  assert.equal(c.stats.connects, 1);
});

test("sync passes never overlap: resync() during one runs one more after it", async () => {
  let inFlight = 0;
  let most = 0;
  let passes = 0;
  const { c } = await setup((op, body, reply) => {
    if (op !== Op.IM_SYNC) return false;
    passes++;
    most = Math.max(most, ++inFlight);
    setTimeout(() => {
      inFlight--;
      reply(Op.IM_SYNC_REPLY, { code: 0, serverTs: "1000", epoch: "1" });
    }, 50);
    return true;
  });
  passes = 0;
  await Promise.all([c.resync(), c.resync(), c.resync()]);
  assert.equal(most, 1, "one IM_SYNC in flight at a time");
  assert.equal(passes, 2, "the running pass, then one for the asks made during it");
});

test("heartbeats go out; a peer that stops answering is left after three periods", async () => {
  let mute = false;
  const { fake, c } = await setup((op) => mute && op === Op.HEARTBEAT, { heartbeatMs: 100 });
  await sleep(350);
  assert.ok(fake.seen.filter((s) => s.op === Op.HEARTBEAT).length >= 2, "heartbeats every 100 ms");
  assert.equal(c.stats.connects, 1, "answered heartbeats keep it");
  mute = true;
  await waitFor("left and reconnected", () => c.stats.connects === 2, 3000);
});

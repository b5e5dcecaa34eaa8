// Unit tests without a server: goim's packet codec (split at every byte, op 9 batches, bad
// lengths), one conversation's receive rule (im.md §5.4 step 2), the marks' coalescing on a
// scripted clock, and the JSON decoding of the golden examples (proto/tests/golden).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ConvState } from "../dist/conv.js";
import { Marks } from "../dist/marks.js";
import { Op, PacketError, decodeMessage, encodePacket } from "../dist/packet.js";
import { decodeEvent, decodeKick, decodePullReply, decodeSendAck, decodeSyncReply, decodeWelcome } from "../dist/wire.js";

const enc = new TextEncoder();
const golden = (f) => JSON.parse(readFileSync(new URL(`../../../proto/tests/golden/${f}`, import.meta.url), "utf8"));

test("packets: header fields, big-endian; op 9 bodies unwrapped into their packets", () => {
  const p = encodePacket(20, 7, enc.encode("{}"));
  assert.deepEqual([...p.subarray(0, 16)], [0, 0, 0, 18, 0, 16, 0, 1, 0, 0, 0, 20, 0, 0, 0, 7]);
  const [d] = decodeMessage(p);
  assert.deepEqual({ ...d, body: [...d.body] }, { ver: 1, op: 20, seq: 7, body: [123, 125] });
  const inner = [encodePacket(41, 0, enc.encode("a")), encodePacket(43, 0, enc.encode("bc")), encodePacket(1000, 0, new Uint8Array(0))];
  const raw = encodePacket(Op.RAW, 0, Uint8Array.from(inner.flatMap((x) => [...x])));
  assert.deepEqual(decodeMessage(raw).map((x) => [x.op, new TextDecoder().decode(x.body)]), [
    [41, "a"],
    [43, "bc"],
    [1000, ""],
  ]);
});

test("packets: every truncation of a batch is refused, never misread", () => {
  const batch = Uint8Array.from([...encodePacket(41, 0, enc.encode("hello")), ...encodePacket(43, 0, enc.encode("x"))]);
  const raw = encodePacket(Op.RAW, 0, batch);
  for (let cut = 1; cut < raw.length; cut++) {
    assert.throws(() => decodeMessage(raw.subarray(0, cut)), PacketError, `cut at ${cut}`);
  }
  const bad = encodePacket(41, 0, new Uint8Array(0));
  new DataView(bad.buffer).setUint16(4, 15); // headerLen below 16
  assert.throws(() => decodeMessage(bad), PacketError);
});

const msg = (seq, o = {}) => ({
  conv: { kind: "P2P", id: "2" },
  seq: String(seq),
  msgId: String(seq),
  sender: "2",
  clientMsgId: `c${seq}`,
  kind: "NORMAL",
  contentType: 1,
  content: `m${seq}`,
  serverTs: String(1000 + seq),
  refSeq: "0",
  recalled: false,
  mentions: [],
  senderPlatform: "web",
  ...o,
});

test("receive rule: contig+1 applied, duplicates dropped, higher seqs held until the gap closes", () => {
  const c = new ConvState({ kind: "P2P", id: "2" }, "1");
  assert.equal(c.ingest([msg(1)]).messages.length, 0, "held until the first page set the base");
  c.initAt(1n);
  assert.deepEqual(c.ingest([]).messages.map((m) => m.seq), ["1"]);
  let a = c.ingest([msg(3), msg(4)]);
  assert.deepEqual(a.messages, []);
  assert.equal(c.contig, 1n);
  assert.ok(c.hasGap);
  assert.equal(c.heldMax, 4n);
  a = c.ingest([msg(1), msg(2), msg(3)]);
  assert.deepEqual(a.messages.map((m) => m.seq), ["2", "3", "4"], "in seq order, each once");
  assert.equal(a.duplicates, 1, "seq 1 again");
  assert.ok(!c.hasGap);
  assert.equal(c.ingest([msg(4), msg(2)]).duplicates, 2);
  assert.deepEqual(c.messages.map((m) => m.seq), ["1", "2", "3", "4"]);
  assert.equal(c.unread, 4);
});

test("receive rule: a recall tombstones its target; own messages raise the read mark", () => {
  const c = new ConvState({ kind: "P2P", id: "2" }, "1");
  c.initAt(1n);
  c.ingest([msg(1), msg(2)]);
  const a = c.ingest([msg(3, { kind: "RECALL", refSeq: "1", content: "" })]);
  assert.deepEqual(a.recalled.map((m) => [m.seq, m.recalled, m.content]), [["1", true, ""]]);
  assert.equal(c.unread, 1, "the recalled one no longer counts");
  c.ingest([msg(4, { sender: "1" })]);
  assert.equal(c.readSeq, 4n);
  assert.equal(c.unread, 0);
  assert.equal(c.last.seq, "4");
});

test("history pages join below the base only when contiguous; a raised floor skips the hole", () => {
  const c = new ConvState({ kind: "GROUP", id: "7" }, "1");
  c.initAt(11n);
  c.ingest([msg(11), msg(12)]);
  assert.equal(c.prepend([msg(8), msg(9)]), false, "seq 10 missing");
  assert.equal(c.prepend([msg(9), msg(10)]), true);
  assert.deepEqual(c.messages.map((m) => m.seq), ["9", "10", "11", "12"]);
  assert.equal(c.find(10n).seq, "10");
  c.ingest([msg(20)]);
  c.raiseFloor(20n);
  assert.equal(c.contig, 20n, "19 and below are gone: no gap to wait for");
  assert.deepEqual(c.messages.map((m) => m.seq), ["20"]);
});

test("marks: at most one request per second per conversation, carrying the highest seq", () => {
  let now = 10_000;
  const timers = [];
  const clock = {
    now: () => now,
    setTimeout: (f, ms) => (timers.push({ at: now + ms, f }), timers.length),
    clearTimeout: (i) => (timers[i - 1].f = () => {}),
  };
  const run = (to) => {
    now = to;
    for (const t of timers.filter((t) => t.at <= to)) {
      timers.splice(timers.indexOf(t), 1, { at: Infinity, f: () => {} });
      t.f();
    }
  };
  const sent = [];
  const m = new Marks((op, conv, seq) => (sent.push([op, conv.id, seq]), true), clock);
  const p2 = { kind: "P2P", id: "2" };
  m.want(28, p2, 1n);
  m.resume();
  run(10_000);
  assert.deepEqual(sent, [[28, "2", 1n]], "the first goes at once");
  for (const s of [2n, 3n, 5n, 4n]) m.want(28, p2, s);
  run(10_999);
  assert.equal(sent.length, 1, "not within the second");
  run(11_000);
  assert.deepEqual(sent.at(-1), [28, "2", 5n], "one more, with the highest");
  m.want(28, { kind: "P2P", id: "3" }, 1n);
  run(11_000);
  assert.deepEqual(sent.at(-1), [28, "3", 1n], "another conversation is not held back");
  m.pause();
  m.want(28, p2, 9n);
  run(20_000);
  assert.equal(sent.length, 3, "nothing while paused (offline)");
  m.resume();
  run(20_000);
  assert.deepEqual(sent.at(-1), [28, "2", 9n]);
});

test("JSON bodies: the golden examples decode with 64-bit ids as strings", () => {
  const ack = decodeSendAck(golden("21_send_ack.json"));
  assert.deepEqual([ack.seq, ack.msgId, ack.serverTs, ack.stored], ["42", "1001", "1796000000000", true]);
  const sync = decodeSyncReply(golden("23_sync_reply.json"));
  assert.equal(sync.convs[0].conv.id, "9007199254740993", "beyond 2^53, exact");
  assert.equal(sync.convs[0].last.senderPlatform, "ios");
  assert.deepEqual([sync.hasMore, sync.epoch, sync.gapWaitMs, sync.resyncMs], [true, "77", 1000, 300000]);
  const pull = decodePullReply(golden("25_pull_reply.json"));
  assert.deepEqual(pull.messages[0].mentions, ["456"]);
  assert.equal(pull.messages[0].kind, "NORMAL");
  const ev = decodeEvent(golden("43_event.json"));
  assert.deepEqual([ev.type, ev.uid, ev.seq, ev.platform], ["READ", "123", "42", "web"]);
  assert.deepEqual(decodeKick(golden("45_kick.json")), { code: 4001, reason: "logged in on another device", byPlatform: "ios" });
  assert.equal(decodeWelcome(golden("8_im_welcome.json")).maxBody, 16384);
  // Defaults omitted by a server, numbers where strings are expected, junk: proto3 defaults.
  const sparse = decodeSendAck({ seq: 5, duplicate: "yes" });
  assert.deepEqual([sparse.code, sparse.seq, sparse.duplicate, sparse.msgId], [0, "5", false, "0"]);
});

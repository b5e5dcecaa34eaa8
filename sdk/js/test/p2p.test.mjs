// 1:1 chat both ways with acks, duplicate sends, read receipts and typing, and a lost push
// healed by the gap pull (this server's resync is the default 5 min, so only the gap pull can
// heal it in time), against a real all-in-one (test/harness.mjs).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, record, sleep, waitFor } from "./harness.mjs";

let srv;
before(async () => {
  srv = await Server.start();
});
after(async () => {
  await srv?.stop();
});

test("1:1 both ways: acks give seqs, each side sees each message once, in order", async () => {
  const a = await srv.client(1);
  const b = await srv.client(2);
  const aMsgs = record(a, "message");
  const bMsgs = record(b, "message");
  const r1 = await a.send({ kind: "P2P", id: "2" }, "hi b");
  assert.equal(r1.seq, "1");
  assert.equal(r1.duplicate, false);
  // The sender holds its own message once acknowledged (from the ack: never pushed back).
  assert.deepEqual(a.messages({ kind: "P2P", id: "2" }).map((m) => [m.seq, m.content, m.sender]), [["1", "hi b", "1"]]);
  const r2 = await b.send({ kind: "P2P", id: "1" }, "hi a");
  assert.equal(r2.seq, "2");
  const r3 = await a.send({ kind: "P2P", id: "2" }, "how are you", { contentType: 7 });
  assert.equal(r3.seq, "3");
  await waitFor("b has 3", () => bMsgs.length === 3);
  await waitFor("a has 3", () => aMsgs.length === 3);
  assert.deepEqual(bMsgs.map((m) => [m.seq, m.sender, m.content]), [
    ["1", "1", "hi b"],
    ["2", "2", "hi a"],
    ["3", "1", "how are you"],
  ]);
  assert.deepEqual(aMsgs.map((m) => m.seq), ["1", "2", "3"]);
  assert.deepEqual(bMsgs[0].conv, { kind: "P2P", id: "1" }, "viewer-relative conversation");
  assert.deepEqual(aMsgs[0].conv, { kind: "P2P", id: "2" });
  assert.equal(bMsgs[2].contentType, 7);
  assert.equal(bMsgs[0].senderPlatform, "web");
  assert.deepEqual(b.messages({ kind: "P2P", id: "1" }).map((m) => m.seq), ["1", "2", "3"]);
  const conv = b.conversation({ kind: "P2P", id: "1" });
  assert.equal(conv.contig, "3");
  assert.equal(conv.unread, 1, "b's own reply read what came before it: only seq 3 is unread");
  // The server's count (a new device's sync) agrees with the local one.
  const b2 = await srv.client(2, "web-2-second");
  assert.equal(b2.conversation({ kind: "P2P", id: "1" }).unread, 1);
  assert.equal(b2.conversation({ kind: "P2P", id: "1" }).readSeq, "2");
  b2.close();
  assert.equal(conv.last.content, "how are you");
  assert.deepEqual(b.conversations().map((c) => c.conv), [{ kind: "P2P", id: "1" }]);
  a.close();
  b.close();
});

test("the same clientMsgId twice is one message: the second ack is a duplicate with the same seq", async () => {
  const a = await srv.client(3);
  const b = await srv.client(4);
  const bMsgs = record(b, "message");
  const first = await a.send({ kind: "P2P", id: "4" }, "once", { clientMsgId: "dup-1" });
  const again = await a.send({ kind: "P2P", id: "4" }, "once", { clientMsgId: "dup-1" });
  assert.equal(again.duplicate, true);
  assert.equal(again.seq, first.seq);
  assert.equal(again.msgId, first.msgId);
  await a.send({ kind: "P2P", id: "4" }, "twice");
  await waitFor("b has 2", () => bMsgs.length === 2);
  assert.deepEqual(bMsgs.map((m) => m.content), ["once", "twice"]);
  // A final code rejects with ImError: the id reused with other content is 409.
  await assert.rejects(a.send({ kind: "P2P", id: "4" }, "other", { clientMsgId: "dup-1" }), (e) => e.name === "ImError" && e.code === 409);
  a.close();
  b.close();
});

test("read receipts, delivered marks and typing reach the peer; marks are coalesced", async () => {
  const a = await srv.client(5);
  const b = await srv.client(6, "web-6", { autoDelivered: false });
  const receipts = record(a, "receipt");
  const typing = record(a, "typing");
  const bMsgs = record(b, "message");
  for (let i = 0; i < 5; i++) await a.send({ kind: "P2P", id: "6" }, `m${i}`);
  await waitFor("b has 5", () => bMsgs.length === 5);
  const reads = b.stats.reads;
  const t0 = Date.now();
  // Five marks over about half a second.
  for (const m of bMsgs) {
    b.markRead({ kind: "P2P", id: "5" }, m.seq);
    assert.equal(b.conversation({ kind: "P2P", id: "5" }).readSeq, m.seq, "read locally at once");
    await sleep(100);
  }
  assert.equal(b.conversation({ kind: "P2P", id: "5" }).unread, 0);
  await waitFor("a sees b's read up to 5", () => receipts.some((r) => r.type === "read" && r.seq === "5" && r.uid === "6"));
  assert.deepEqual(receipts.find((r) => r.type === "read").conv, { kind: "P2P", id: "6" });
  // One at once, then at most one per further second (a slow machine stretches the sleeps).
  const allowed = 1 + Math.ceil((Date.now() - t0) / 1000);
  assert.ok(b.stats.reads - reads <= Math.min(allowed, 4), `5 marks: at most ${allowed} IM_READ, got ${b.stats.reads - reads}`);
  assert.equal(a.conversation({ kind: "P2P", id: "6" }).peerReadSeq, "5");
  b.typing({ kind: "P2P", id: "5" }, true);
  await waitFor("a sees b typing", () => typing.some((t) => t.uid === "6" && t.typing));
  assert.deepEqual(typing[0].conv, { kind: "P2P", id: "6" });
  a.close();
  b.close();
  // Delivered: a client with autoDelivered (the default) marks what it holds.
  const c = await srv.client(7);
  const d = await srv.client(8);
  const cReceipts = record(c, "receipt");
  await c.send({ kind: "P2P", id: "8" }, "delivered?");
  await waitFor("c sees d's delivered mark", () => cReceipts.some((r) => r.type === "delivered" && r.seq === "1"));
  assert.equal(c.conversation({ kind: "P2P", id: "8" }).peerRecvSeq, "1");
  c.close();
  d.close();
});

test("a lost push in the middle: held above the gap, pulled after gapWaitMs, emitted in order", async () => {
  const a = await srv.client(41);
  let dropped = 0;
  const b = await srv.client(42, "web-42", {
    testHooks: { dropPush: (m) => m.seq === "2" && dropped++ === 0 },
  });
  const events = record(b, "message");
  const toB = { kind: "P2P", id: "42" };
  // The conversation first, so its first page cannot bring seq 2.
  await a.send(toB, "one");
  await waitFor("b holds the conversation", () => events.length === 1);
  for (const t of ["two", "three"]) await a.send(toB, t);
  await waitFor("b has 3", () => events.length === 3);
  assert.equal(dropped, 1, "the push of seq 2 was lost");
  assert.deepEqual(events.map((m) => m.content), ["one", "two", "three"]);
  assert.equal(b.stats.gapPulls, 1);
  assert.deepEqual(b.messages({ kind: "P2P", id: "41" }).map((m) => m.seq), ["1", "2", "3"]);
});

test("resync() (the app back in the foreground) brings a lost last push at once", async () => {
  const a = await srv.client(31);
  const b = await srv.client(32, "web-32", { testHooks: { dropPush: (m) => m.content === "tail" } });
  const events = record(b, "message");
  const toB = { kind: "P2P", id: "32" };
  await a.send(toB, "first");
  await waitFor("b has the first", () => events.length === 1);
  await a.send(toB, "tail");
  await waitFor("the tail push dropped", () => b.stats.pushesDropped === 1);
  await sleep(100);
  assert.equal(events.length, 1, "no gap to see: nothing pulled (the periodic resync is 5 min here)");
  await b.resync();
  assert.deepEqual(events.map((m) => m.content), ["first", "tail"]);
});

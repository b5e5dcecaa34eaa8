// Groups of three, history paging, recall tombstones and one user on two devices, against a
// real all-in-one (test/harness.mjs).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, record, waitFor } from "./harness.mjs";

let srv;
before(async () => {
  srv = await Server.start();
});
after(async () => {
  await srv?.stop();
});

const seqs = (ms) => ms.map((m) => Number(m.seq));
const range = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);

test("a group of three: every member sees every message once, in the same order", async () => {
  await srv.admin("POST", "/im/v1/groups", { gid: "100", name: "three", owner: "21", members: ["22", "23"], history: "all" });
  const g = { kind: "GROUP", id: "100" };
  const cs = [await srv.client(21), await srv.client(22), await srv.client(23)];
  const seen = cs.map((c) => record(c, "message"));
  // Seq 1 is the creation notice (SYSTEM); the clients pulled it at connect.
  await waitFor("each holds the creation notice", () => cs.every((c) => c.messages(g).length === 1));
  assert.equal(cs[0].messages(g)[0].kind, "SYSTEM");
  // Concurrent sends from all three.
  const sends = [];
  for (let i = 0; i < 10; i++) for (const [n, c] of cs.entries()) sends.push(c.send(g, `from ${n} #${i}`));
  const acks = await Promise.all(sends);
  assert.deepEqual(acks.map((a) => Number(a.seq)).sort((a, b) => a - b), range(2, 31));
  for (const [n, c] of cs.entries()) {
    await waitFor(`member ${n} has 31`, () => c.messages(g).length === 31);
    assert.deepEqual(seqs(c.messages(g)), range(1, 31), `member ${n}: contiguous, ascending`);
  }
  // Pushes, acks and connect pulls together: each seq emitted once, in order.
  for (const s of seen) assert.deepEqual(seqs(s), range(seqs(s)[0] ?? 2, 31));
  const order = (c) => c.messages(g).map((m) => m.content).join("|");
  assert.equal(order(cs[1]), order(cs[0]));
  assert.equal(order(cs[2]), order(cs[0]));
  const members = await cs[1].members("100");
  assert.deepEqual(members.map((m) => m.uid).sort(), ["21", "22", "23"]);
  assert.equal(members.find((m) => m.uid === "21").role, 2, "the owner");
  for (const c of cs) c.close();
});

test("history pages backward down to seq 1 and joins what the client holds", async () => {
  await srv.admin("POST", "/im/v1/groups", { gid: "200", name: "long", owner: "24", members: ["25"], history: "all" });
  const g = { kind: "GROUP", id: "200" };
  const a = await srv.client(24);
  for (let i = 1; i <= 120; i++) await a.send(g, `m${i}`);
  // A new device of member 25: its first pull is the newest page only.
  const b = await srv.client(25, "fresh-device", { initialPage: 50 });
  await waitFor("the newest page", () => b.messages(g).length === 50);
  assert.deepEqual(seqs(b.messages(g)), range(72, 121));
  const p1 = await b.history(g, "72", 50);
  assert.deepEqual(seqs(p1), range(22, 71), "ascending, below 72");
  const p2 = await b.history(g, "22", 50);
  assert.deepEqual(seqs(p2), range(1, 21));
  assert.equal(p2[0].kind, "SYSTEM");
  assert.deepEqual(await b.history(g, "1", 50), []);
  assert.deepEqual(seqs(b.messages(g)), range(1, 121), "pages joined below what was held");
  assert.equal(b.messages(g)[120].content, "m120");
  a.close();
  b.close();
});

test("recall: the target becomes a tombstone for everyone, the sender's other device included", async () => {
  const a = await srv.client(26);
  const a2 = await srv.client(26, "second-tab");
  const b = await srv.client(27);
  const toB = { kind: "P2P", id: "27" };
  const toA = { kind: "P2P", id: "26" };
  const bRecalls = record(b, "recall");
  const a2Recalls = record(a2, "recall");
  const a2Msgs = record(a2, "message");
  const sent = await a.send(toB, "oops");
  await a.send(toB, "kept");
  await waitFor("b has both", () => b.messages(toA).length === 2);
  await waitFor("a's other tab has both (pushed)", () => a2Msgs.length === 2);
  const r = await a.recall(toB, sent.seq);
  assert.equal(r.seq, "3", "the recall event is sequenced");
  await waitFor("b sees the recall", () => bRecalls.length === 1);
  assert.equal(bRecalls[0].seq, sent.seq);
  assert.equal(bRecalls[0].recalled, true);
  assert.equal(bRecalls[0].content, "");
  const held = b.messages(toA);
  assert.deepEqual(held.map((m) => [m.seq, m.kind, m.recalled, m.content]), [
    ["1", "NORMAL", true, ""],
    ["2", "NORMAL", false, "kept"],
    ["3", "RECALL", false, ""],
  ]);
  assert.equal(held[2].refSeq, "1");
  await waitFor("a's other tab sees it", () => a2Recalls.length === 1);
  assert.equal(a.messages(toB)[0].recalled, true, "the sender's own view too");
  // Recalling twice is final: 409.
  await assert.rejects(a.recall(toB, sent.seq), (e) => e.code === 409);
  // A read mark reaches the user's other devices (badge sync).
  const reply = await b.send(toA, "read me");
  await waitFor("the other tab counts it unread", () => a2.conversation(toB).unread === 1);
  assert.equal(a2.conversation(toB).readSeq, "3", "its own recall raised its read mark");
  a.markRead(toB, reply.seq);
  await waitFor("the other tab's read mark", () => a2.conversation(toB).readSeq === reply.seq);
  assert.equal(a2.conversation(toB).unread, 0);
  a.close();
  a2.close();
  b.close();
});

test("a group made while members are online reaches them: its notice, then its messages", async () => {
  const a = await srv.client(28);
  const b = await srv.client(29);
  const convs = record(b, "conversation");
  const g = { kind: "GROUP", id: "300" };
  await srv.admin("POST", "/im/v1/groups", { gid: "300", name: "late", owner: "28", members: ["29"], history: "all" });
  await waitFor("b holds the notice", () => b.messages(g).length === 1);
  assert.equal(b.messages(g)[0].kind, "SYSTEM");
  assert.ok(convs.some((c) => c.conv.kind === "GROUP" && c.conv.id === "300"), "a conversation event");
  await a.send(g, "welcome");
  await waitFor("b has it", () => b.messages(g).length === 2);
  assert.deepEqual(b.conversations()[0].conv, g, "newest activity first");
  assert.equal(b.conversation(g).unread, 1);
  a.close();
  b.close();
});

test("members removed: the conversation is left and read-only", async () => {
  await srv.admin("POST", "/im/v1/groups", { gid: "400", name: "leaving", owner: "33", members: ["34"], history: "all" });
  const a = await srv.client(33);
  const b = await srv.client(34);
  const g = { kind: "GROUP", id: "400" };
  await a.send(g, "before");
  await waitFor("b has it", () => b.messages(g).length === 2);
  await srv.admin("DELETE", "/im/v1/groups/400/members", { uids: ["34"] });
  await waitFor("b's head says left", () => b.conversation(g)?.left === true);
  await assert.rejects(b.send(g, "still here?"), (e) => e.code === 403);
  a.close();
  b.close();
});

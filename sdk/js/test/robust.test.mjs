// What the client contract heals or stops on (im.md §5.4): a push twice, a connection lost
// before the ack, a lost last push (periodic resync), 429 retried with the same clientMsgId, final codes, and
// an admin kick that is terminal. Against a real all-in-one (test/harness.mjs).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, record, sleep, waitFor } from "./harness.mjs";

let srv;
before(async () => {
  // resync_hint short so the tail test does not wait 5 minutes; send_rate low for 429s.
  srv = await Server.start({ resync_hint: '"1s"', send_rate: "3" });
});
after(async () => {
  await srv?.stop();
});

test("a push delivered twice is applied once", async () => {
  const a = await srv.client(51);
  const b = await srv.client(52, "web-52", { testHooks: { repeatPush: () => true } });
  const events = record(b, "message");
  const toB = { kind: "P2P", id: "52" };
  await a.send(toB, "zero");
  await waitFor("b holds the conversation", () => events.length === 1);
  const dups = b.stats.duplicates;
  for (const t of ["one", "two", "three"]) await a.send(toB, t);
  await waitFor("b has 4", () => events.length === 4);
  await sleep(200);
  assert.deepEqual(events.map((m) => m.seq), ["1", "2", "3", "4"]);
  assert.ok(b.stats.duplicates - dups >= 3, "each second copy dropped (a resync pull may add more)");
});

test("a connection lost before the ack: the send is resent with the same id on the next one, stored once", async () => {
  let dropped = 0;
  const a = await srv.client(53, "web-53", { testHooks: { dropAfterSend: (id) => id === "lost-ack" && dropped++ === 0 } });
  const b = await srv.client(54);
  const events = record(b, "message");
  const r = await a.send({ kind: "P2P", id: "54" }, "through a drop", { clientMsgId: "lost-ack" });
  assert.equal(dropped, 2, "asked on both attempts; the first one's connection was dropped");
  assert.ok(a.stats.connects >= 2, "resent on a new connection");
  assert.equal(r.seq, "1");
  await a.send({ kind: "P2P", id: "54" }, "next");
  await waitFor("b has 2", () => events.length === 2);
  await sleep(200);
  assert.deepEqual(events.map((m) => [m.seq, m.content]), [["1", "through a drop"], ["2", "next"]]);
});

test("a lost last push (no gap to see): the periodic resync brings it", async () => {
  const a = await srv.client(43);
  const b = await srv.client(44, "web-44", { testHooks: { dropPush: (m) => m.content === "tail" } });
  const events = record(b, "message");
  const toB = { kind: "P2P", id: "44" };
  await a.send(toB, "first");
  await waitFor("b has the first", () => events.length === 1);
  const passes = b.stats.syncPasses;
  await a.send(toB, "tail");
  await sleep(200);
  assert.equal(events.length, 1, "the tail push was lost");
  await waitFor("the resync pulled the tail", () => events.length === 2, 5000);
  assert.equal(events[1].content, "tail");
  assert.ok(b.stats.syncPasses > passes);
  assert.equal(b.stats.pushesDropped, 1);
});

test("429: sends over the rate are retried after retryAfterMs with the same id, each stored once", async () => {
  const a = await srv.client(45);
  const b = await srv.client(46);
  const events = record(b, "message");
  const toB = { kind: "P2P", id: "46" };
  const acks = await Promise.all(Array.from({ length: 12 }, (_, i) => a.send(toB, `burst ${i}`)));
  assert.deepEqual(acks.map((r) => Number(r.seq)).sort((x, y) => x - y), Array.from({ length: 12 }, (_, i) => i + 1));
  await waitFor("b has 12", () => events.length === 12);
  assert.equal(new Set(events.map((m) => m.content)).size, 12, "each once");
});

test("final codes reject with ImError and are not retried", async () => {
  const a = await srv.client(47);
  await assert.rejects(a.send({ kind: "P2P", id: "48" }, "x".repeat(9000)), (e) => e.name === "ImError" && e.code === 413);
  await assert.rejects(a.send({ kind: "GROUP", id: "999" }, "nobody here"), (e) => e.name === "ImError" && [403, 404].includes(e.code));
});

test("an admin kick is terminal: state kicked, the kick event, no reconnect, calls reject", async () => {
  const a = await srv.client(49);
  const kicks = record(a, "kick");
  const states = record(a, "state");
  const connects = a.stats.connects;
  await srv.admin("POST", "/im/v1/users/49/kick", {});
  await waitFor("kicked", () => a.state === "kicked");
  assert.equal(kicks.length, 1);
  assert.equal(kicks[0].code, 4002);
  await sleep(1000);
  assert.equal(a.state, "kicked");
  assert.deepEqual(states, ["kicked"]);
  assert.equal(a.stats.connects, connects, "no reconnect");
  assert.deepEqual((await srv.admin("GET", "/im/v1/users/49/online")).devices ?? [], []);
  await assert.rejects(a.send({ kind: "P2P", id: "50" }, "after the kick"), (e) => e.code === 4002);
  a.connect();
  await sleep(300);
  assert.equal(a.state, "kicked", "connect() after a kick does nothing: a new client is needed");
});

test("another device of the same platform replaces this one (one_per_platform): kick 4001, terminal", async () => {
  const own = await Server.start({ multi_login: '"one_per_platform"' });
  try {
    const first = await own.client(55, "laptop");
    const kicks = record(first, "kick");
    const second = await own.client(55, "desktop");
    await waitFor("the first is kicked", () => first.state === "kicked");
    assert.equal(kicks[0].code, 4001);
    assert.equal(kicks[0].byPlatform, "web");
    await sleep(500);
    assert.equal(first.state, "kicked", "no reconnect (it would kick the second in turn)");
    assert.equal(second.state, "online");
  } finally {
    await own.stop();
  }
});

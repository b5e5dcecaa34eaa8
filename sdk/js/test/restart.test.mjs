// Reconnect across a SERVER RESTART (the all-in-one killed with SIGKILL and started again on
// the same ports and store): sends made while it is down resolve once it is back, and both
// sides end with every message once, in seq order, nothing missed (im.md §5.4 steps 1 and 3).

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

test("a server restart mid-chat: nothing missed, nothing twice", async () => {
  const seen = { a: [], b: [] };
  try {
    await restartScenario(seen);
  } catch (e) {
    // What each side held, and the server's last words: enough to tell a flake from a bug.
    e.message += `\n a: ${seen.a.map((m) => m.seq)} ${JSON.stringify(seen.aClient?.stats)} ${seen.aClient?.state}` +
      `\n b: ${seen.b.map((m) => m.seq)} ${JSON.stringify(seen.bClient?.stats)} ${seen.bClient?.state}\n server log: ${srv.log.slice(-2000)}`;
    throw e;
  }
});

async function restartScenario(seen) {
  const a = await srv.client(11);
  // b's token waits for `open` once the server is down: b stays away while a sends, so what
  // a sent then reaches b only through b's sync and pulls.
  let gate = Promise.resolve();
  let open = () => {};
  const b = await srv.client(12, "web-12", { imToken: async () => (await gate, srv.token(12)) });
  const toB = { kind: "P2P", id: "12" };
  const toA = { kind: "P2P", id: "11" };
  const aMsgs = record(a, "message");
  const bMsgs = record(b, "message");
  Object.assign(seen, { a: aMsgs, b: bMsgs, aClient: a, bClient: b });
  const bStates = record(b, "state");
  for (let i = 0; i < 5; i++) {
    await a.send(toB, `before ${i}`);
    await b.send(toA, `reply ${i}`);
  }
  await waitFor("b has 10", () => bMsgs.length === 10);

  gate = new Promise((r) => (open = r));
  await srv.kill();
  await waitFor("both notice", () => a.state === "reconnecting" && b.state === "reconnecting");
  // Sent while the server is down: pending until it is back, then acknowledged once.
  const pending = [];
  for (let i = 0; i < 5; i++) pending.push(a.send(toB, `during ${i}`));
  await sleep(300);
  await srv.spawn();
  const acks = await Promise.all(pending);
  assert.equal(new Set(acks.map((r) => r.seq)).size, 5, "five distinct seqs");
  assert.equal(b.state, "reconnecting", "b is still away");
  // Sent through the management API while b is away.
  await srv.admin("POST", "/im/v1/messages", { from: "11", conv: { kind: "P2P", id: "12" }, clientMsgId: "api-1", contentType: 1, content: "via api" });
  open();
  // Nothing is pushed to b from now until it has all 16: only its sync and pulls bring them.
  await waitFor("b has 16 after its sync", () => bMsgs.length === 16, 15_000);
  await waitFor("both back online", () => a.state === "online" && b.state === "online");
  await b.send(toA, "after from b");
  for (let i = 0; i < 3; i++) await a.send(toB, `after ${i}`);

  await waitFor("b has all 20", () => bMsgs.length === 20, 15_000);
  await waitFor("a has all 20", () => aMsgs.length === 20, 15_000).catch((e) => {
    throw new Error(`${e.message}: a holds ${aMsgs.map((m) => m.seq)}; ${JSON.stringify(a.conversation(toB))}; ${JSON.stringify(a.stats)} state ${a.state}`);
  });
  const seqs = (ms) => ms.map((m) => Number(m.seq));
  const want = Array.from({ length: 20 }, (_, i) => i + 1);
  assert.deepEqual(seqs(bMsgs), want, "b: each seq once, in order");
  assert.deepEqual(seqs(aMsgs), want, "a: each seq once, in order");
  assert.deepEqual(seqs(b.messages(toA)), want);
  const texts = bMsgs.map((m) => m.content);
  for (const t of ["before 4", "during 0", "during 4", "via api", "after from b", "after 2"]) assert.ok(texts.includes(t), t);
  assert.ok(bStates.includes("reconnecting") && bStates.at(-1) === "online", bStates.join(","));
  assert.ok(b.stats.connects >= 2);
  // Nothing more arrives later (no late duplicate from a pull racing a push).
  await sleep(500);
  assert.equal(bMsgs.length, 20);
  a.close();
  b.close();
}

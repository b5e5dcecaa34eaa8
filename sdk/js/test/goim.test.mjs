// The goim side of the SDK: node selection from /goim/nodes/weighted with the url fallback,
// room pushes (op ≥ 1000 inside op 9 batches) and room change (op 12). Against a real
// all-in-one (test/harness.mjs).

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

const DEAD_URL = "ws://127.0.0.1:9/sub"; // discard port: nobody listens

test("nodesUrl: the comet comes from /goim/nodes/weighted, before a dead fallback url", async () => {
  const c = await srv.client(61, "web-61", { url: DEAD_URL, nodesUrl: srv.httpUrl });
  assert.equal(c.state, "online");
  assert.equal(c.stats.connects, 1);
  c.close();
});

test("nodesUrl unreachable: the url is the fallback", async () => {
  const c = await srv.client(62, "web-62", { url: srv.wsUrl, nodesUrl: "http://127.0.0.1:9" });
  assert.equal(c.state, "online");
  c.close();
});

test("room pushes arrive as 'room' events; changeRoom moves the connection", async () => {
  const c = await srv.client(63, "web-63", { roomId: "live://1000", accepts: [1000] });
  const room = record(c, "room");
  const push = async (r, text) => {
    const res = await fetch(`${srv.httpUrl}/goim/push/room?operation=1000&type=live&room=${r}`, { method: "POST", body: text });
    assert.equal((await res.json()).code, 0);
  };
  await push(1000, "hello room");
  await waitFor("the room push", () => room.length === 1);
  assert.equal(room[0].op, 1000);
  assert.equal(room[0].text, "hello room");
  assert.deepEqual([...room[0].body], [...new TextEncoder().encode("hello room")]);
  c.changeRoom("live://2000");
  await sleep(200);
  await push(1000, "old room");
  await push(2000, "new room");
  await waitFor("the new room's push", () => room.some((p) => p.text === "new room"));
  await sleep(200);
  assert.deepEqual(room.map((p) => p.text), ["hello room", "new room"]);
  c.close();
});

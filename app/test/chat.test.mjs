// The chat app end to end: real starling, real Chromium, people in their own browser contexts.
// Run: (cd app && npm test), with the starling binary built (tools/test.sh does both).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  ADMIN, Server, browser, cspViolations, online, openChat, openConv, person, send, seqs, shot, signIn, texts, until, WAIT,
} from "./harness.mjs";

let server;
let b;
before(async () => {
  b = await browser();
});
after(async () => {
  await b?.close();
});

async function withServer(f, opts) {
  server = await Server.start(opts);
  try {
    cspViolations.length = 0;
    await f(server);
    assert.deepEqual(cspViolations, [], "the page broke its own Content-Security-Policy");
  } catch (e) {
    console.error(server.log.join("").slice(-4000));
    throw e;
  } finally {
    await server.stop();
  }
}

test("the app is served with its content types; unknown files are 404", () => withServer(async (s) => {
  const index = await fetch(`${s.http}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get("content-type"), /^text\/html/);
  const etag = index.headers.get("etag");
  assert.ok(etag);
  assert.equal((await fetch(`${s.http}/`, { headers: { "If-None-Match": etag } })).status, 304);
  const js = await fetch(`${s.http}/app/app.js`);
  assert.match(js.headers.get("content-type"), /javascript/);
  assert.equal((await fetch(`${s.http}/app/nope.js`)).status, 404);
  const cfg = await (await fetch(`${s.http}/app/api/config`)).json();
  assert.match(cfg.data.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+\/sub$/);
  assert.equal(cfg.data.devSignin, true);
}));

test("two users chat both ways, with unread badges, ticks and typing", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  await assert.doesNotReject(alice.getByTestId("dev-banner").waitFor({ state: "visible" }));

  await openChat(alice, "2");
  await send(alice, "hi Bob");
  await until("alice's own message", () => texts(alice), ["hi Bob"]);
  const bobsItem = bob.locator('[data-testid="conv-item"][data-conv="P2P:1"]');
  await until("bob's unread badge", () => bobsItem.getAttribute("data-unread"), "1");
  assert.equal(await bobsItem.getByTestId("conv-last").textContent(), "hi Bob");
  assert.equal(await bobsItem.getByTestId("conv-title").textContent(), "Alice");
  await until("alice's delivered tick (bob's device got it, bob has not read it)", () =>
    alice.locator('[data-testid="message-status"]').first().getAttribute("data-status"), "delivered");

  await openConv(bob, "P2P:1");
  await until("bob reads", () => texts(bob), ["hi Bob"]);
  await until("alice's read tick", () =>
    alice.locator('[data-testid="message-status"]').first().getAttribute("data-status"), "read");

  await bob.getByTestId("composer-input").pressSequentially("hel");
  await alice.getByTestId("typing").filter({ hasText: "Bob is typing" }).waitFor({ timeout: WAIT });
  await send(bob, "hello Alice");
  await until("alice sees the reply", () => texts(alice), ["hi Bob", "hello Alice"]);
  await until("bob's view", () => texts(bob), ["hi Bob", "hello Alice"]);
  await send(alice, "how are you?");
  await until("bob sees it", () => texts(bob), ["hi Bob", "hello Alice", "how are you?"]);
  await until("read, as bob has it open", () =>
    alice.locator('[data-testid="message-status"]').last().getAttribute("data-status"), "read");
  await shot(alice, "chat");
}));

test("a group of three: created, chatted in, a member added", () => withServer(async (s) => {
  const [a, bb, c, d] = [await person(b, s), await person(b, s), await person(b, s), await person(b, s)];
  await signIn(a, "1", "Alice");
  await signIn(bb, "2", "Bob");
  await signIn(c, "3", "Carol");
  await signIn(d, "4", "Dave");
  await a.getByTestId("new-group-name").fill("Trio");
  await a.getByTestId("new-group-members").fill("2, 3");
  await a.getByTestId("new-group-submit").click();
  await until("group title", () => a.getByTestId("chat-title").textContent(), "Trio");
  await send(a, "welcome both");
  for (const p of [bb, c]) {
    const item = p.locator('[data-testid="conv-item"][data-conv^="GROUP:"]');
    await until("group listed", () => item.getByTestId("conv-title").textContent(), "Trio");
    await item.click();
    await until("group message", () => texts(p), ["welcome both"]);
  }
  await send(bb, "thanks");
  await until("carol sees bob", () => texts(c), ["welcome both", "thanks"]);
  await send(c, "hi all");
  const all = ["welcome both", "thanks", "hi all"];
  for (const p of [a, bb, c]) await until("same order everywhere", () => texts(p), all);
  assert.deepEqual(await seqs(a), await seqs(c));
  await until("both others read alice's message", () =>
    a.locator('[data-testid="message"]:not([data-kind="SYSTEM"]) [data-testid="message-status"]').first().textContent(), "✓✓ read by 2");

  await a.getByTestId("add-member-uid").fill("4");
  await a.getByTestId("add-member-submit").click();
  const item = d.locator('[data-testid="conv-item"][data-conv^="GROUP:"]');
  await item.click({ timeout: WAIT });
  await send(d, "hello, I'm Dave");
  await until("alice sees dave", () => texts(a), [...all, "hello, I'm Dave"]);
  for (const p of [bb, c]) await until("bob and carol see dave", () => texts(p), [...all, "hello, I'm Dave"]);
  await until("the add is shown", () =>
    a.locator('[data-testid="message"][data-kind="SYSTEM"]').last().textContent(), "You added Dave");
  // Dave reads from his join on: once his read of a later message is in, alice's first
  // message still counts the two who could see it.
  await send(a, "welcome Dave");
  const status = a.locator('[data-testid="message"]:not([data-kind="SYSTEM"]) [data-testid="message-status"]');
  await until("all three read the new one", () => status.last().textContent(), "✓✓ read by 3");
  assert.equal(await status.first().textContent(), "✓✓ read by 2");
  await shot(a, "group");
  // Adding someone already in says so (the server skips them without a SYSTEM message).
  await a.getByTestId("add-member-uid").fill("2");
  await a.getByTestId("add-member-submit").click();
  await until("already a member", () => a.getByTestId("pane-error").textContent(), "already members: 2");
}));

test("a reloaded tab sees the whole history in order (scrolling up loads it)", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  await openChat(alice, "2");
  const want = [];
  for (let i = 1; i <= 45; i++) {
    want.push(`message ${i}`);
    await send(alice, `message ${i}`);
  }
  await until("all sent", async () => (await texts(alice)).length, 45);
  await bob.reload();
  await online(bob);
  await openConv(bob, "P2P:1");
  // Scroll to the top until the first page is reached.
  await until("history loaded to the start", async () => {
    await bob.getByTestId("messages").evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event("scroll")); });
    return bob.getByTestId("history-state").getAttribute("data-state");
  }, "start");
  await until("whole history in order", () => texts(bob), want);
  const shown = (await seqs(bob)).map(Number);
  assert.deepEqual(shown, shown.map((_, i) => i + 1), "seqs 1..45 with no gap or duplicate");
}));

test("a recall turns into a tombstone in the other tab and the sender's other tab", () => withServer(async (s) => {
  const alice = await person(b, s);
  const aliceTab2 = await alice.context().newPage();
  const bob = await person(b, s);
  await signIn(alice, "1", "Alice");
  await aliceTab2.goto("/");
  await online(aliceTab2);
  await signIn(bob, "2", "Bob");
  await openChat(alice, "2");
  await send(alice, "keep this");
  await send(alice, "oops, wrong chat");
  await openConv(bob, "P2P:1");
  await openConv(aliceTab2, "P2P:2");
  for (const p of [bob, aliceTab2]) await until("both arrive", () => texts(p), ["keep this", "oops, wrong chat"]);

  await alice.bringToFront(); // a hidden tab's animation frames are throttled: clicks wait on them
  await alice.locator('[data-testid="message"][data-recalled="false"]').last().getByTestId("message-recall").click();
  await until("bob's tombstone", () => texts(bob), ["keep this", "This message was recalled"]);
  await until("alice's other tab", () => texts(aliceTab2), ["keep this", "You recalled a message"]);
  assert.equal(await bob.locator('[data-testid="message"][data-recalled="true"]').count(), 1);
  await until("bob's list shows it", () =>
    bob.locator('[data-conv="P2P:1"] [data-testid="conv-last"]').textContent(), "Message recalled");
  await shot(bob, "recall");
}));

test("the server restarts mid-chat: both tabs reconnect and miss nothing", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  await openChat(alice, "2");
  await send(alice, "before the restart");
  await openConv(bob, "P2P:1");
  await until("delivered", () => texts(bob), ["before the restart"]);

  await s.kill();
  for (const p of [alice, bob])
    await p.locator('[data-testid="conn-state"]:not([data-state="online"])').waitFor({ timeout: WAIT });
  // Held by the SDK while the server is down, sent once it is back.
  await send(alice, "alice while down");
  await send(bob, "bob while down");
  await s.spawn();
  await online(alice);
  await online(bob);
  await until("both sent", async () => (await texts(bob)).length, 3);
  await send(bob, "after the restart");
  // The two sends from the outage are ordered by the server; both tabs show its order.
  await until("bob has all", async () => (await texts(bob)).length, 4);
  const order = await texts(bob);
  assert.deepEqual([...order].sort(), ["after the restart", "alice while down", "before the restart", "bob while down"]);
  assert.equal(order[0], "before the restart");
  assert.equal(order[3], "after the restart");
  await until("alice, in the same order", () => texts(alice), order);
  for (const p of [alice, bob]) assert.deepEqual((await seqs(p)).map(Number), [1, 2, 3, 4]);
  await shot(bob, "reconnected");
}));

test("the live room panel shows goim room pushes", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  await alice.getByTestId("room-text").fill("goal!");
  await alice.getByTestId("room-send").click();
  for (const p of [alice, bob])
    await until("room push", () => p.getByTestId("room-message").allTextContents(), ["goal!"]);
  await bob.getByTestId("room-id").fill("live://2000");
  await bob.getByTestId("room-join-submit").click();
  await until("bob's panel is cleared", () => bob.getByTestId("room-current").textContent(), "live://2000");
  // Bob's push to his new room reaches him once comet has moved him (op 12 is asynchronous).
  const got = () => bob.getByTestId("room-message").allTextContents();
  await pushUntilSeen(bob, got, "in 2000");
  await alice.getByTestId("room-text").fill("only room 1000");
  await alice.getByTestId("room-send").click();
  await until("alice gets it", () => alice.getByTestId("room-message").allTextContents(), ["goal!", "only room 1000"]);
  await pushUntilSeen(bob, got, "in 2000 again");
  assert.ok(!(await got()).includes("only room 1000"), "bob left room 1000");
  await shot(alice, "room");
}));

/** Pushes `text` from `page`'s room form until `got()` shows it (each try a distinct text). */
async function pushUntilSeen(page, got, text) {
  for (let i = 0; ; i++) {
    const t = `${text} #${i}`;
    await page.getByTestId("room-text").fill(t);
    await page.getByTestId("room-send").click();
    try {
      await page.getByTestId("room-message").filter({ hasText: t }).waitFor({ timeout: 1000 });
      return;
    } catch (e) {
      if (i >= 10) throw e;
    }
  }
}

test("without the development sign-in: no banner, sign in with a token the backend minted", () => withServer(async (s) => {
  const r = await fetch(`${s.http}/im/v1/tokens`, {
    method: "POST", headers: { Authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ uid: "9" }),
  });
  const token = (await r.json()).data.token;
  const page = await person(b, s);
  await page.goto("/");
  assert.equal(await page.getByTestId("dev-banner").isVisible(), false);
  assert.equal(await page.getByTestId("signin-name").isVisible(), false);
  await page.getByTestId("signin-uid").fill("9");
  await page.getByTestId("signin-token").fill("not-a-token");
  await page.getByTestId("signin-submit").click();
  // A bad token never gets online (the server closes the connection without a reply).
  await page.locator('[data-testid="conn-state"][data-state="reconnecting"]').waitFor({ timeout: WAIT });
  assert.notEqual(await page.getByTestId("conn-state").getAttribute("data-state"), "online");
  await until("the refusal is explained", async () =>
    (await page.locator("#side-error").textContent()).startsWith("Not online yet: the server refuses this token"), true);
  await page.getByTestId("signout").click();
  await page.getByTestId("signin-uid").fill("9");
  await page.getByTestId("signin-token").fill(token);
  await page.getByTestId("signin-submit").click();
  await online(page);
  await openChat(page, "10");
  await send(page, "hello from a real token");
  await until("sent", () => texts(page), ["hello from a real token"]);
}, { devSignin: false }));

test("a development token the server no longer takes (new secret) is minted again", () => withServer(async (s) => {
  const alice = await person(b, s);
  await signIn(alice, "1", "Alice");
  await s.restartEdited((c) => c.replace(/token_secret = ".*"/, 'token_secret = "another-secret-0123456789abcdefgh"'));
  await online(alice);
  await openChat(alice, "2");
  await send(alice, "still here");
  await until("sent with the new token", () => texts(alice), ["still here"]);
}));

/** The extension comet answered on the page's WebSocket upgrade (read over CDP, since the
 *  page's own WebSocket API shows only the extension's name). */
async function negotiated(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  let answer;
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => {
    const h = Object.entries(e.response.headers).find(([k]) => k.toLowerCase() === "sec-websocket-extensions");
    answer = h ? h[1] : "";
  });
  return () => answer;
}

/** `starling_comet_ws_deflate_bytes_total{dir="out",stage}` from the server's /metrics. */
async function deflatedOut(s) {
  const text = await (await fetch(`${s.http}/metrics`)).text();
  const v = (stage) => Number(text.match(new RegExp(`starling_comet_ws_deflate_bytes_total\\{dir="out",stage="${stage}"\\} (\\d+)`))?.[1] ?? NaN);
  return { raw: v("raw"), compressed: v("compressed") };
}

test("Chromium negotiates permessage-deflate and the app's JSON traffic shrinks", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  const [aliceExt, bobExt] = [await negotiated(alice), await negotiated(bob)];
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  for (const ext of [aliceExt(), bobExt()]) {
    assert.match(ext, /^permessage-deflate\b/);
    assert.match(ext, /server_no_context_takeover/);
    assert.match(ext, /client_no_context_takeover/);
  }
  await openChat(alice, "2");
  const said = [];
  for (let i = 0; i < 8; i++) {
    said.push(`message ${i}: ${"the quick brown fox jumps over the lazy dog ".repeat(4)}`);
    await send(alice, said[i]);
  }
  await openConv(bob, "P2P:1");
  await until("bob reads alice's messages, inflated", () => texts(bob), said);
  const out = await deflatedOut(s);
  assert.ok(out.raw > 0 && out.compressed > 0, JSON.stringify(out));
  // Each message is compressed on its own (no context takeover): about half here.
  assert.ok(out.compressed < out.raw * 0.8, `pushes to Chromium not shrunk: ${JSON.stringify(out)}`);
  console.log(`deflate to Chromium: ${out.raw} bytes raw, ${out.compressed} sent`);
}));

test("with permessage_deflate off, Chromium's offer is declined and the app still works", () => withServer(async (s) => {
  const alice = await person(b, s);
  const bob = await person(b, s);
  const aliceExt = await negotiated(alice);
  await signIn(alice, "1", "Alice");
  await signIn(bob, "2", "Bob");
  assert.equal(aliceExt(), "");
  await openChat(alice, "2");
  await send(alice, "plain");
  await openConv(bob, "P2P:1");
  await until("bob gets it uncompressed", () => texts(bob), ["plain"]);
}, { deflate: false }));

// Starling's web chat app: plain DOM over the TypeScript SDK (sdk/js). The page's HTML is
// src/index.html; the server side is starling/src/app (GET /app/api/config, and with
// [app] dev_signin the development sign-in and group routes).
import { StarlingClient, convKey, uuid } from "../../sdk/js/src/index.js";
import type { ConnectionState, Conversation, ConvRef, Message } from "../../sdk/js/src/index.js";
import * as api from "./api.js";
import { ConvState, Store, cmpSeq, systemText } from "./store.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const SESSION = "starling.session"; // localStorage: shared by the tabs of one browser profile
const DEVICE = "starling.device"; // sessionStorage: one device key per tab, kept across reloads
const PAGE = 30; // messages per history page
const TYPING_SHOWN_MS = 6000;

let cfg: api.AppConfig;
let session: api.Session;
let client: StarlingClient;
let current: ConvRef | null = null;
const store = new Store();
const names = new Map<string, string>(); // uid → display name
const titles = new Map<string, string>(); // convKey → group name

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {},
  data: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = Object.assign(document.createElement(tag), props);
  for (const [k, v] of Object.entries(data)) e.setAttribute(k === "testid" ? "data-testid" : `data-${k}`, v);
  e.append(...children);
  return e;
}

const sameConv = (a: ConvRef | null, b: ConvRef) => !!a && a.kind === b.kind && a.id === b.id;
const uidList = (s: string) => s.split(/[\s,]+/).filter((x) => /^[1-9][0-9]*$/.test(x));

function nameOf(uid: string): string {
  if (uid === session.uid) return "You";
  const n = names.get(uid);
  if (n === undefined) {
    names.set(uid, "");
    if (cfg.devSignin)
      api.userName(session.token, uid).then((u) => { names.set(uid, u.name); renderAll(); }, () => {});
  }
  return n || `User ${uid}`;
}

function titleOf(conv: ConvRef): string {
  if (conv.kind === "P2P") return nameOf(conv.id);
  if (conv.kind === "GROUP") {
    const k = convKey(conv);
    const t = titles.get(k);
    if (t === undefined) {
      titles.set(k, "");
      if (cfg.devSignin)
        api.groupInfo(session.token, conv.id).then((g) => { titles.set(k, g.name); renderAll(); }, () => {});
    }
    return t || `Group ${conv.id}`;
  }
  return "Notices";
}

// ---- sign-in ---------------------------------------------------------------------------

async function boot() {
  cfg = await api.appConfig();
  $("dev-banner").hidden = !cfg.devSignin;
  $("signin-name-row").hidden = !cfg.devSignin;
  $("signin-token-row").hidden = cfg.devSignin;
  $("signin-hint").textContent = cfg.devSignin
    ? "Development sign-in: any user id, no password."
    : "Paste an im_token your backend minted (POST /im/v1/tokens).";
  const saved = localStorage.getItem(SESSION);
  if (saved) {
    start(JSON.parse(saved) as api.Session);
  } else {
    $("signin-view").hidden = false;
  }
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const uid = $<HTMLInputElement>("signin-uid").value.trim();
  $("signin-error").textContent = "";
  try {
    const s = cfg.devSignin
      ? await api.signin(uid, $<HTMLInputElement>("signin-name").value.trim())
      : { uid, name: "", token: $<HTMLInputElement>("signin-token").value.trim(), expiresAt: "0" };
    localStorage.setItem(SESSION, JSON.stringify(s));
    start(s);
  } catch (e) {
    $("signin-error").textContent = String((e as Error).message);
  }
});

$("signout").addEventListener("click", () => {
  client?.close();
  localStorage.removeItem(SESSION);
  location.reload();
});

let triesSinceOnline = 0;

/** The im_token for each connect. A development token is minted again when it nears expiry,
 *  or when the last try with it did not get online (the server may have another secret now,
 *  or revoked it); a failed mint fails this try, and the SDK retries after its backoff. */
async function token(): Promise<string> {
  const left = Number(session.expiresAt) - Date.now();
  triesSinceOnline++;
  if (!cfg.devSignin && triesSinceOnline > 2) {
    // The server closes a connection whose token it refuses without a word (goim's rule):
    // after a few tries that never got online, say what is most likely wrong.
    $("side-error").textContent =
      "Not online yet: the server refuses this token (expired, revoked, or from another secret) or cannot be reached. Sign out and paste a new one.";
  }
  if (cfg.devSignin && (left < 3_600_000 || triesSinceOnline > 1)) {
    session = { ...(await api.signin(session.uid)), name: session.name };
    localStorage.setItem(SESSION, JSON.stringify(session));
  }
  return session.token;
}

function deviceKey(): string {
  let k = sessionStorage.getItem(DEVICE);
  if (!k) {
    k = `web-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem(DEVICE, k);
  }
  return k;
}

function start(s: api.Session) {
  session = s;
  if (s.name) names.set(s.uid, s.name);
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  $("signout").hidden = false;
  $("me").textContent = `${s.name || "User " + s.uid} (uid ${s.uid})`;
  const room = $<HTMLInputElement>("room-id").value;
  $("room-current").textContent = room;
  client = new StarlingClient({
    url: cfg.wsUrl,
    mid: s.uid,
    key: deviceKey(),
    platform: "web",
    imToken: token,
    roomId: room,
    accepts: [1000],
    reconnect: { minMs: 200, maxMs: 3000 },
  });
  client.on("state", showState);
  client.on("message", onMessage);
  client.on("recall", (m) => { if (store.get(m.conv).put(m)) renderConv(m.conv); });
  client.on("conversation", () => { renderList(); if (current) renderTicks(); });
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
  setInterval(renderTyping, 1000);
}

function showState(s: ConnectionState, detail?: string) {
  const e = $("conn-state");
  e.dataset.state = s;
  e.textContent = detail ? `${s}: ${detail}` : s;
  if (s === "online") {
    triesSinceOnline = 0;
    if ($("side-error").textContent?.startsWith("Not online yet")) $("side-error").textContent = "";
  }
  if (s === "online" && current) openConv(current); // after a reconnect: refill what the SDK synced
}

// ---- messages --------------------------------------------------------------------------

function onMessage(m: Message) {
  const c = store.get(m.conv);
  c.put(m);
  if (m.kind === "RECALL") {
    // The tombstone comes with the "recall" event; a RECALL seen first marks the target.
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
  // Back in the foreground: sync the directory now (im.md §5.4 step 4), then mark read.
  void client?.resync().then(() => { renderList(); if (current) openConv(current); });
  markRead();
});

function openConv(conv: ConvRef) {
  current = { kind: conv.kind, id: conv.id };
  const c = store.get(conv);
  for (const m of client.messages(conv)) c.put(m);
  $("chat-title").textContent = titleOf(conv);
  $("add-member").hidden = !(conv.kind === "GROUP" && cfg.devSignin);
  $<HTMLInputElement>("composer-input").disabled = false;
  $<HTMLButtonElement>("composer").querySelector("button")!.disabled = false;
  $("pane-error").textContent = "";
  renderConv(conv, true);
  renderList();
  markRead();
  if (c.bySeq.size < PAGE) void loadOlder(c);
}

/** One page of history before the oldest message held (IM_PULL BACKWARD). */
async function loadOlder(c: ConvState) {
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
    $("pane-error").textContent = `history: ${(e as Error).message}`;
  } finally {
    c.loading = false;
  }
  if (sameConv(current, c.conv)) {
    renderConv(c.conv);
    box.scrollTop = box.scrollHeight - fromBottom; // keep the reader's place
    markRead();
  }
}

$("messages").addEventListener("scroll", () => {
  if (current && $("messages").scrollTop < 40) void loadOlder(store.get(current));
});

function tick(m: Message, conv: Conversation | undefined): string {
  if (m.sender !== session.uid || !conv) return "";
  if (m.conv.kind === "GROUP") return store.get(m.conv).readers(m.seq) > 0 ? "read" : "sent";
  if (cmpSeq(m.seq, conv.peerReadSeq || "0") <= 0) return "read";
  if (cmpSeq(m.seq, conv.peerRecvSeq || "0") <= 0) return "delivered";
  return "sent";
}

const TICKS: Record<string, string> = { sent: "✓", delivered: "✓✓", read: "✓✓ read", sending: "…", failed: "!" };

function messageRow(m: Message, conv: Conversation | undefined): HTMLLIElement {
  if (m.kind === "SYSTEM")
    return el("li", { className: "system", textContent: systemText(m, nameOf) },
      { testid: "message", seq: m.seq, kind: "SYSTEM" });
  const mine = m.sender === session.uid;
  const row = el("li", { className: mine ? "msg mine" : "msg" },
    { testid: "message", seq: m.seq, sender: m.sender, recalled: String(m.recalled), kind: m.kind });
  if (!mine && current?.kind !== "P2P") row.append(el("span", { className: "who", textContent: nameOf(m.sender) }));
  row.append(m.recalled
    ? el("span", { className: "text tombstone", textContent: mine ? "You recalled a message" : "This message was recalled" }, { testid: "message-text" })
    : el("span", { className: "text", textContent: m.content }, { testid: "message-text" }));
  const time = new Date(Number(m.serverTs)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const meta = el("span", { className: "meta" }, {}, el("time", { textContent: time }));
  const t = tick(m, conv);
  const readers = t === "read" && m.conv.kind === "GROUP" ? store.get(m.conv).readers(m.seq) : 0;
  if (t) meta.append(el("span", { className: `tick ${t}`, textContent: readers ? `✓✓ read by ${readers}` : TICKS[t], title: t },
    { testid: "message-status", status: t }));
  if (mine && !m.recalled) {
    const b = el("button", { type: "button", className: "recall", textContent: "Recall", title: "Recall for everyone" }, { testid: "message-recall" });
    b.addEventListener("click", () => {
      client.recall(m.conv, m.seq).then(() => {
        // As for a send, the recalling connection gets no push of its own recall.
        const c = store.get(m.conv);
        const t = c.bySeq.get(m.seq);
        if (t && c.put({ ...t, recalled: true, content: "" })) renderConv(m.conv);
      }, (e: Error) => { $("pane-error").textContent = `recall: ${e.message}`; });
    });
    meta.append(b);
  }
  row.append(meta);
  return row;
}

function renderConv(conv: ConvRef, toBottom = false) {
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
    list.append(el("li", { className: "msg mine pending" }, { testid: "message", pending: "true" },
      el("span", { className: "text", textContent: p.content }, { testid: "message-text" }),
      el("span", { className: "meta" }, {}, el("span", { className: `tick ${status}`, textContent: TICKS[status], title: p.failed ?? status },
        { testid: "message-status", status }))));
  }
  renderHistoryState(c);
  renderTyping();
  if (atBottom) box.scrollTop = box.scrollHeight;
  renderList();
}

function renderTicks() {
  if (current) renderConv(current);
}

function renderHistoryState(c: ConvState) {
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
    const preview = !last ? "" : last.recalled ? "Message recalled" : last.kind === "SYSTEM" ? systemText(last, nameOf)
      : last.kind === "RECALL" ? "Message recalled" : `${last.sender === session.uid ? "You: " : ""}${last.content}`;
    const unread = sameConv(current, c.conv) ? 0 : c.unread;
    const b = el("button", { type: "button", className: sameConv(current, c.conv) ? "conv active" : "conv" },
      { testid: "conv-item", conv: convKey(c.conv), unread: String(unread) },
      el("span", { className: "conv-title", textContent: titleOf(c.conv) }, { testid: "conv-title" }),
      el("span", { className: "conv-last", textContent: preview }, { testid: "conv-last" }));
    if (unread > 0) b.append(el("span", { className: "badge", textContent: String(unread), ariaLabel: `${unread} unread` }, { testid: "conv-unread" }));
    if (sameConv(current, c.conv)) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => openConv(c.conv));
    return el("li", {}, {}, b);
  }));
}

/** The SDK's conversations, with what this tab sent itself (see the composer) as their last
 *  message when newer, and the open one even before it has a message; newest first. */
function conversations(): Conversation[] {
  const out = client.conversations().filter((c) => !c.left || sameConv(current, c.conv));
  const seen = new Set(out.map((c) => convKey(c.conv)));
  for (const c of store.all()) {
    if (!seen.has(convKey(c.conv)) && (c.bySeq.size > 0 || sameConv(current, c.conv)))
      out.push({ conv: c.conv, lastSeq: "0", floorSeq: "0", readSeq: "0", peerReadSeq: "0", peerRecvSeq: "0", unread: 0, left: false, contig: "0" });
  }
  const newest = (c: Conversation) => {
    const high = store.get(c.conv).highest();
    const mine = high ? store.get(c.conv).bySeq.get(high) : undefined;
    return mine && (!c.last || cmpSeq(mine.seq, c.last.seq) > 0) ? { ...c, last: mine } : c;
  };
  const ts = (c: Conversation) => BigInt(c.last?.serverTs ?? "0");
  return out.map(newest).sort((a, b) => (ts(a) === ts(b) ? 0 : ts(a) > ts(b) ? -1 : 1));
}

function renderAll() {
  renderList();
  if (current) {
    $("chat-title").textContent = titleOf(current);
    renderConv(current);
  }
}

// ---- forms -----------------------------------------------------------------------------

let typingSent = 0;
$("composer-input").addEventListener("input", () => {
  if (!current) return;
  const now = Date.now();
  if (now - typingSent > 3000) { // the server forwards at most one per 3 s (im.md §7.5)
    typingSent = now;
    client.typing(current, true);
  }
});

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("composer-input");
  const text = input.value;
  if (!current || !text.trim()) return;
  input.value = "";
  const conv = current;
  const c = store.get(conv);
  const clientMsgId = uuid();
  const p = { clientMsgId, content: text } as { clientMsgId: string; content: string; failed?: string };
  c.pending.push(p);
  renderConv(conv, true);
  typingSent = 0;
  client.typing(conv, false);
  client.send(conv, text, { clientMsgId }).then(
    (ack) => {
      // The server pushes a message to every device but the sending connection (im.md §7.4),
      // so the ack is this tab's copy; the SDK may also deliver it later (same seq: kept once).
      c.put({ conv, seq: ack.seq, msgId: ack.msgId, sender: session.uid, clientMsgId, kind: "NORMAL",
        contentType: 1, content: text, serverTs: ack.serverTs, refSeq: "0", recalled: false,
        mentions: [], senderPlatform: "web" });
      c.pending = c.pending.filter((x) => x !== p);
      renderConv(conv);
    },
    (e: Error) => { p.failed = e.message; $("pane-error").textContent = `not sent: ${e.message}`; renderConv(conv); });
});

$("new-chat").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const uid = $<HTMLInputElement>("new-chat-uid").value.trim();
  if (uid === session.uid) { $("side-error").textContent = "That is you."; return; }
  $("side-error").textContent = "";
  $<HTMLFormElement>("new-chat").reset();
  openConv({ kind: "P2P", id: uid });
});

$("new-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("side-error").textContent = "";
  if (!cfg.devSignin) { $("side-error").textContent = "Groups are created by your backend (POST /im/v1/groups)."; return; }
  try {
    const g = await api.createGroup(session.token, $<HTMLInputElement>("new-group-name").value.trim(),
      uidList($<HTMLInputElement>("new-group-members").value));
    titles.set(convKey({ kind: "GROUP", id: g.gid }), g.name);
    $<HTMLFormElement>("new-group").reset();
    openConv({ kind: "GROUP", id: g.gid });
  } catch (e) {
    $("side-error").textContent = `group: ${(e as Error).message}`;
  }
});

$("add-member").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current || current.kind !== "GROUP") return;
  try {
    const asked = uidList($<HTMLInputElement>("add-member-uid").value);
    const { added } = await api.addMembers(session.token, current.id, asked);
    const already = asked.filter((u) => !added.includes(u));
    $("pane-error").textContent = already.length ? `already members: ${already.join(", ")}` : "";
    $<HTMLFormElement>("add-member").reset();
  } catch (e) {
    $("pane-error").textContent = `add member: ${(e as Error).message}`;
  }
});

$("room-join").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $<HTMLInputElement>("room-id").value.trim();
  client.changeRoom(room);
  $("room-current").textContent = room;
  $("room-messages").replaceChildren();
});

$("room-push").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("room-text");
  try {
    await api.pushRoom($("room-current").textContent || "live://1000", input.value);
    input.value = "";
  } catch (e) {
    $("pane-error").textContent = `room push: ${(e as Error).message}`;
  }
});

boot().catch((e) => {
  document.body.prepend(el("p", { className: "error", textContent: `Cannot start: ${(e as Error).message}` }, { testid: "boot-error" }));
});

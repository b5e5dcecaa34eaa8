// Test harness: a REAL Starling all-in-one (the `starling` binary) on spare loopback ports with
// a temp config and store, the management API (/im/v1) to mint tokens and make groups, and
// SDK clients connected to it. STARLING_BIN names the binary (default: the workspace's
// target/debug/starling, which tools/test.sh builds).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { StarlingClient } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const STARLING_BIN = process.env.STARLING_BIN
  ? path.resolve(process.env.STARLING_BIN)
  : path.resolve(here, "../../../target/debug/starling");
export const ADMIN = "sdk-js-test-admin";

/** `n` distinct ports nobody listens on now (the OS picks them; released before use). All
 *  are held open until every one is picked: a port closed at once can be handed out again by
 *  the next pick (seen in CI: one port listed twice in the server's config). */
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` every 20 ms until it is truthy; throws naming `what` after `ms`. */
export async function waitFor(what, pred, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await sleep(20);
  }
}

export class Server {
  /** `im`: keys of the [im] table over the test defaults, values as TOML literals. */
  static async start(im = {}) {
    const imTable = {
      enabled: "true",
      token_secret: '"sdk-js-test-secret-0123456789abcdef"',
      admin_token: `"${ADMIN}"`,
      gap_wait: '"300ms"',
      send_rate: "500",
      ...im,
    };
    const s = new Server();
    s.dir = mkdtempSync(path.join(tmpdir(), "starling-sdk-js-"));
    const [tcp, ws, wss, http, grpc] = await freePorts(5);
    s.ports = { tcp, ws, wss, http, grpc };
    s.config = path.join(s.dir, "starling.toml");
    writeFileSync(
      s.config,
      `[comet]
server_id = "127.0.0.1"
workers = 1
lame_duck = "0s"
online_interval = "200ms"
[comet.tcp]
bind = ["127.0.0.1:${s.ports.tcp}"]
[comet.websocket]
bind = ["127.0.0.1:${s.ports.ws}"]
tls_bind = ["127.0.0.1:${s.ports.wss}"]
[logic.node]
host_domain = ""
tcp_port = ${s.ports.tcp}
ws_port = ${s.ports.ws}
wss_port = ${s.ports.wss}
[logic.http]
bind = "127.0.0.1:${s.ports.http}"
[grpc]
bind = "127.0.0.1:${s.ports.grpc}"
[log]
filter = "warn"
[im]
path = ${JSON.stringify(path.join(s.dir, "im"))}
${Object.entries(imTable).map(([k, v]) => `${k} = ${v}`).join("\n")}
`,
    );
    try {
      await s.spawn();
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.ports.ws}/sub`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.ports.http}`;
  }

  async spawn() {
    if (!existsSync(STARLING_BIN)) {
      throw new Error(`no starling binary at ${STARLING_BIN}: run \`cargo build -p starling\` or set STARLING_BIN`);
    }
    this.log = "";
    this.proc = spawn(STARLING_BIN, ["--config", this.config], { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (b) => {
      this.log = (this.log + b.toString()).slice(-20_000);
    };
    this.proc.stdout.on("data", keep);
    this.proc.stderr.on("data", keep);
    this.exited = new Promise((r) => this.proc.once("exit", r));
    let dead = false;
    void this.exited.then(() => (dead = true));
    await waitFor(
      "the all-in-one to listen",
      async () => {
        if (dead) throw new Error(`starling exited at start:\n${this.log}`);
        return (await canConnect(this.ports.ws)) && (await canConnect(this.ports.http));
      },
      30_000,
    );
  }

  /** Kills the process at once (SIGKILL: no drain, as a crash). */
  async kill() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill("SIGKILL");
    await this.exited;
  }

  async restart() {
    await this.kill();
    await this.spawn();
  }

  async stop() {
    for (const c of this.clients ?? []) c.close();
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The management API: returns `data` of goim's envelope; throws on a non-2xx status. */
  async admin(method, route, body) {
    const res = await fetch(`${this.httpUrl}${route}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
    return text ? JSON.parse(text).data : undefined;
  }

  async token(uid, platform = "web") {
    return (await this.admin("POST", "/im/v1/tokens", { uid: String(uid), platform, ttl: 3600 })).token;
  }

  /** A connected client for `uid` (a fresh token per connect), waiting until it is online. */
  async client(uid, key = `web-${uid}`, opts = {}) {
    const c = new StarlingClient({
      url: this.wsUrl,
      mid: String(uid),
      key,
      platform: "web",
      imToken: () => this.token(uid),
      WebSocket,
      reconnect: { minMs: 50, maxMs: 400 },
      ...opts,
    });
    (this.clients ??= []).push(c);
    c.connect();
    await waitFor(`client ${uid}/${key} online`, () => c.state === "online");
    return c;
  }
}

/** Every `event` a client emits, in order. */
export function record(client, event) {
  const seen = [];
  client.on(event, (v) => seen.push(v));
  return seen;
}

// The chat app's end-to-end harness: a real `starling` all-in-one (STARLING_BIN, default
// $CARGO_TARGET_DIR/debug/starling or the workspace's target/debug/starling) on spare
// loopback ports with the app and its development sign-in on, and Debian's Chromium
// (/usr/bin/chromium, never a downloaded browser) driven by playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, "..", "..");
export const screenshots = join(repo, "docs", "screenshots");
const bin = process.env.STARLING_BIN ??
  join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug", "starling");
export const ADMIN = "app-test-admin";
/** How long any UI expectation may take (a reconnect after a restart included). */
export const WAIT = 20_000;

/** `n` distinct spare loopback ports. All are held open until every one is picked: a port
 *  closed at once can be handed out again by the next pick (seen in CI: one port listed twice
 *  in the server's config, which starling refuses). */
async function sparePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A starling process with the app on; `restart()` kills it (SIGKILL) and starts it again on
 *  the same ports and store. */
export class Server {
  /** `devSignin: false`: the app without its development sign-in; tokens then come from the
   *  management API (`admin`, the admin token set here). `deflate`: comet's
   *  `permessage_deflate` (RFC 7692), on as in conf/app-try.toml. */
  static async start({ devSignin = true, deflate = true } = {}) {
    const s = new Server();
    s.dir = mkdtempSync(join(tmpdir(), "starling-app-"));
    const [tcp, ws, http, grpc] = await sparePorts(4);
    s.http = `http://127.0.0.1:${http}`;
    s.config = join(s.dir, "starling.toml");
    writeFileSync(s.config, `
[comet]
workers = 1
lame_duck = "0s"
[comet.tcp]
bind = ["127.0.0.1:${tcp}"]
[comet.websocket]
bind = ["127.0.0.1:${ws}"]
permessage_deflate = ${deflate}
[logic.http]
bind = "127.0.0.1:${http}"
[grpc]
bind = "127.0.0.1:${grpc}"
[im]
enabled = true
token_secret = "app-test-secret-0123456789abcdef"
path = "${join(s.dir, "im")}"
admin_token = "${ADMIN}"
group_read_receipts_max = 100
[app]
enabled = true
dev_signin = ${devSignin}
`);
    await s.spawn();
    return s;
  }

  async spawn() {
    this.log = [];
    this.proc = spawn(bin, ["--config", this.config], { stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((r) => this.proc.once("exit", r));
    for (const out of [this.proc.stdout, this.proc.stderr]) out.on("data", (d) => this.log.push(String(d)));
    const deadline = Date.now() + WAIT;
    for (;;) {
      try {
        const r = await fetch(`${this.http}/app/api/config`);
        if (r.ok) return;
      } catch { /* not up yet */ }
      if (this.proc.exitCode !== null || Date.now() > deadline)
        throw new Error(`starling did not start (${bin}):\n${this.log.join("")}`);
      await sleep(50);
    }
  }

  async kill() {
    this.proc.kill("SIGKILL");
    await this.exited;
  }

  /** Kills the server and starts it again with its config file's text passed through `edit`. */
  async restartEdited(edit) {
    await this.kill();
    writeFileSync(this.config, edit(readFileSync(this.config, "utf8")));
    await this.spawn();
  }

  async restart() {
    await this.kill();
    await this.spawn();
  }

  async stop() {
    if (this.proc.exitCode === null) await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Debian's Chromium, headless, in a fresh temporary profile (playwright makes one per launch). */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Console errors of pages refused by the page's Content-Security-Policy (checked per test). */
export const cspViolations = [];

/** A page of a new browser context (its own storage: a person on their own machine). */
export async function person(b, server) {
  const ctx = await b.newContext({ viewport: { width: 1200, height: 720 }, baseURL: server.http });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return page;
}

export async function signIn(page, uid, name) {
  await page.goto("/");
  await page.getByTestId("signin-uid").fill(uid);
  await page.getByTestId("signin-name").fill(name);
  await page.getByTestId("signin-submit").click();
  await online(page);
}

export async function online(page) {
  await page.locator('[data-testid="conn-state"][data-state="online"]').waitFor({ timeout: WAIT });
}

export async function openChat(page, uid) {
  await page.getByTestId("new-chat-uid").fill(uid);
  await page.getByTestId("new-chat-submit").click();
}

export async function openConv(page, key) {
  await page.locator(`[data-testid="conv-item"][data-conv="${key}"]`).click({ timeout: WAIT });
}

export async function send(page, text) {
  await page.getByTestId("composer-input").fill(text);
  await page.getByTestId("composer-input").press("Enter");
}

/** The texts of the open conversation's stored messages (not pending, not SYSTEM), in order. */
export async function texts(page) {
  return page.locator('[data-testid="message"]:not([data-pending]):not([data-kind="SYSTEM"]) [data-testid="message-text"]').allTextContents();
}

/** Seqs of the open conversation's rows, in the order shown. */
export async function seqs(page) {
  return page.locator('[data-testid="message"][data-seq]').evaluateAll((es) => es.map((e) => e.dataset.seq));
}

/** Waits until `f()` deep-equals `want` (JSON), failing with the last value seen. */
export async function until(what, f, want) {
  const deadline = Date.now() + WAIT;
  let got;
  for (;;) {
    got = await f();
    if (JSON.stringify(got) === JSON.stringify(want)) return;
    if (Date.now() > deadline)
      throw new Error(`${what}: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
    await sleep(50);
  }
}

export async function shot(page, name) {
  mkdirSync(screenshots, { recursive: true });
  // Clock times hidden and the caret off: the same run gives the same picture, so a test run
  // leaves the committed screenshots unchanged unless the app's look changed.
  // (Through the CSSOM: the page's Content-Security-Policy refuses injected style sheets.)
  await page.evaluate(() => {
    for (const t of document.querySelectorAll("time")) t.style.visibility = "hidden";
    (document.activeElement)?.blur();
  });
  await page.mouse.move(0, 0); // no hover left on the last button clicked
  await page.screenshot({ path: join(screenshots, `${name}.png`), caret: "hide", animations: "disabled" });
}

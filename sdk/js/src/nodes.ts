// Node selection (goim's /goim/nodes/weighted; logic/src/http.rs `nodes_weighted`): the comets
// to try, best first, then the configured urls as the fallback.

import type { ClientOptions } from "./options.js";

export interface Picked {
  /** ws(s)://host:port/sub, in the order to try. */
  urls: string[];
  /** goim's advertised heartbeat interval, ms (absent without a nodes answer). */
  heartbeatMs?: number;
}

/** How long the nodes request may take before the fallback urls are used, ms. */
export const NODES_TIMEOUT_MS = 3000;

/**
 * GET `${nodesUrl}/goim/nodes/weighted?platform=web` → goim's envelope `{code: 0, data:
 * {nodes: [host...], ws_port, wss_port, heartbeat (s), ...}}`; each host becomes
 * `ws://host:ws_port/sub` (`wss://host:wss_port/sub` when nodesUrl is https). Any failure
 * (network, non-zero code, bad JSON) falls back to `url` alone.
 */
export async function pickNodes(o: Pick<ClientOptions, "url" | "nodesUrl">): Promise<Picked> {
  const fixed = o.url === undefined ? [] : Array.isArray(o.url) ? o.url.slice() : [o.url];
  if (!o.nodesUrl) return { urls: fixed };
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), NODES_TIMEOUT_MS);
  try {
    const base = o.nodesUrl.replace(/\/+$/, "");
    const res = await fetch(`${base}/goim/nodes/weighted?platform=web`, { signal: ctl.signal });
    const j = (await res.json()) as { code?: number; data?: Record<string, unknown> };
    const d = j.data;
    if (j.code !== 0 || !d || !Array.isArray(d["nodes"])) return { urls: fixed };
    const secure = base.startsWith("https:");
    const port = Number(secure ? d["wss_port"] : d["ws_port"]);
    const urls: string[] = [];
    for (const h of d["nodes"] as unknown[]) {
      if (typeof h !== "string" || h === "") continue;
      const hostPort = /:\d+$/.test(h) || !port ? h : `${h}:${port}`;
      const u = `${secure ? "wss" : "ws"}://${hostPort}/sub`;
      if (!urls.includes(u)) urls.push(u);
    }
    for (const u of fixed) if (!urls.includes(u)) urls.push(u);
    const hb = Number(d["heartbeat"]);
    return hb > 0 ? { urls, heartbeatMs: hb * 1000 } : { urls };
  } catch {
    return { urls: fixed };
  } finally {
    clearTimeout(timer);
  }
}

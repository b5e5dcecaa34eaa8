// The same-origin HTTP calls of the app: /app/api/* (starling/src/app) and goim's push API.
// Every reply is goim's envelope {code, message, data}; a code other than 0 throws ApiError.

export class ApiError extends Error {
  constructor(public code: number, message: string) {
    super(message);
  }
}

export interface AppConfig {
  wsUrl: string;
  devSignin: boolean;
}

export interface Session {
  uid: string;
  name: string;
  token: string;
  expiresAt: string; // ms since the epoch, decimal string
}

async function call<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = `Bearer ${token}`;
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let env: { code?: number; message?: string; data?: T };
  try {
    env = await r.json();
  } catch {
    throw new ApiError(r.status, `${method} ${path}: HTTP ${r.status}`);
  }
  if (env.code !== 0) throw new ApiError(env.code ?? r.status, env.message || `HTTP ${r.status}`);
  return env.data as T;
}

export const appConfig = () => call<AppConfig>("GET", "/app/api/config");

/** Development sign-in: an im_token for any uid (server: [app] dev_signin). */
export const signin = (uid: string, name?: string) =>
  call<Session>("POST", "/app/api/signin", { uid, name: name || undefined });

export const userName = (token: string, uid: string) =>
  call<{ uid: string; name: string }>("GET", `/app/api/users/${encodeURIComponent(uid)}`, undefined, token);

export const groupInfo = (token: string, gid: string) =>
  call<{ gid: string; name: string; memberCount: number; dissolved: boolean }>(
    "GET", `/app/api/groups/${encodeURIComponent(gid)}`, undefined, token);

export const createGroup = (token: string, name: string, members: string[]) =>
  call<{ gid: string; name: string }>("POST", "/app/api/groups", { name, members }, token);

export const addMembers = (token: string, gid: string, uids: string[]) =>
  call<{ added: string[] }>("POST", `/app/api/groups/${encodeURIComponent(gid)}/members`, { uids }, token);

/** goim's room push (POST /goim/push/room), operation 1000: `room` is "type://id". */
export async function pushRoom(room: string, text: string): Promise<void> {
  const m = /^([^:/]+):\/\/(.+)$/.exec(room);
  if (!m) throw new ApiError(400, `room ${room}: expected type://id, e.g. live://1000`);
  const q = new URLSearchParams({ operation: "1000", type: m[1], room: m[2] });
  const r = await fetch(`/goim/push/room?${q}`, { method: "POST", body: text });
  const env = (await r.json()) as { code: number; message: string };
  if (env.code !== 0) throw new ApiError(env.code, env.message);
}

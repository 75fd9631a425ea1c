// The console's only way to the gateway: the public API, with the key the user signed in with.
// The key lives in this tab's sessionStorage: gone when the tab closes, never in a cookie,
// never sent anywhere but this gateway's own /v1 routes.

const STORAGE = "notigate.console.key";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the gateway answered ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.field = error.field || null;
    this.title = status === 401 ? "This key was refused" : status === 403 ? "Not allowed with this key" : null;
  }
}

export function token() {
  return sessionStorage.getItem(STORAGE);
}

export function remember(value) {
  sessionStorage.setItem(STORAGE, value);
}

export function forget() {
  sessionStorage.removeItem(STORAGE);
}

/** A console link (`.../console/#link=cl_...`) or a bare token, as pasted: the token. */
export function tokenFrom(text) {
  const trimmed = text.trim();
  const at = trimmed.indexOf("#link=");
  return at >= 0 ? decodeURIComponent(trimmed.slice(at + 6)) : trimmed;
}

export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  const key = token();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (exc) {
    const error = new ApiError(0, { error: { message: `the gateway could not be reached (${exc.message})` } });
    error.title = "No answer";
    throw error;
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

/** The curl command that makes the same call, for the clipboard (the key stays a variable). */
export function curl(method, path, body) {
  const url = `${location.origin}${path}`;
  const parts = [`curl -s -X ${method} '${url}'`, `-H "authorization: Bearer $NOTIGATE_KEY"`];
  if (body !== undefined) {
    parts.push("-H 'content-type: application/json'");
    parts.push(`-d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`);
  }
  return parts.join(" \\\n  ");
}

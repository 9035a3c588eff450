// Calls to the JSON API of the server that served this page.
//
// A server started with tokens wants a read token on every call. The page asks for one
// (the sign-in form), keeps it in sessionStorage (this tab only, gone when it closes) and
// sends it as `Authorization: Bearer`, never in a URL: URLs end up in the browser's history,
// in proxy and server logs and in Referer headers. The event stream is read with fetch() for
// the same reason (stream.js): an EventSource cannot send a header.
"use strict";

const KEY = "rtrace.read-token";

export const token = () => sessionStorage.getItem(KEY) || "";
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}
export const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

// 401 or 403: the page needs (another) token.
export class AuthError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}
// Any other refusal, with the problem's detail (RFC 9457).
export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

export function url(path, params = {}) {
  const u = new URL(path, location.href);
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== "" && v != null) u.searchParams.append(key, v);
    }
  }
  return u;
}

export async function problemDetail(response) {
  try {
    const problem = await response.json();
    return problem.detail || response.statusText;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

export async function request(path, params = {}, { signal, headers = {} } = {}) {
  const response = await fetch(url(path, params), {
    headers: { ...authHeaders(), ...headers },
    signal,
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(response.status, await problemDetail(response));
  }
  if (!response.ok) throw new ApiError(response.status, await problemDetail(response));
  return response;
}

export const getText = async (path, params, options) => (await request(path, params, options)).text();
export const getJSON = async (path, params, options) => (await request(path, params, options)).json();

// The REST API and the API key the page signs in with.
//
// The key arrives in the link the gateway prints at first start, in the URL fragment
// (`/#key=ck_…`), which browsers never send to a server; the page moves it into localStorage
// and takes it out of the address bar at once. It is sent only as `Authorization: Bearer`
// (REST) and as the `colloquy.key.…` WebSocket subprotocol, never in a query string.

const STORAGE = "colloquy.key";

/** The stored key, after taking one from the URL fragment if the link carried it. */
export function signedInKey() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromLink = fragment.get("key");
  if (fromLink) {
    localStorage.setItem(STORAGE, fromLink.trim());
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem(STORAGE);
}

export function storeKey(key) {
  localStorage.setItem(STORAGE, key.trim());
}

export function forgetKey() {
  localStorage.removeItem(STORAGE);
}

/** A refused request: the gateway's stable `code` and its message, which says what to do. */
export class ApiError extends Error {
  constructor(status, code, message, retryable) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryable = retryable;
  }
}

/** One REST call; resolves to the JSON answer (or null for 204), rejects with an ApiError. */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${localStorage.getItem(STORAGE) ?? ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the gateway does not answer (${error.message}): is it running?`, true);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = json?.error ?? {};
    throw new ApiError(
      response.status,
      error.code ?? "http_" + response.status,
      error.message ?? `the gateway answered ${response.status}`,
      error.retryable ?? false,
    );
  }
  return json;
}

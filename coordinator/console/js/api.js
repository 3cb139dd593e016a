// The REST API with the session cookie. Writes carry x-qala-csrf, which
// no cross-site form can send; the server also checks Origin.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthenticated = () => {};

export function whenLoggedOut(f) {
  onUnauthenticated = f;
}

export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') opts.headers['x-qala-csrf'] = '1';
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, 'unavailable', String(e));
  }
  if (r.status === 204) return null;
  let j = null;
  try { j = await r.json(); } catch (_) { j = null; }
  if (!r.ok) {
    const err = new ApiError(r.status, (j && j.code) || 'http', (j && j.message) || r.statusText);
    if (r.status === 401 && path !== '/v1/session') onUnauthenticated(err);
    throw err;
  }
  return j;
}

// HTTP client for the public API (API.md §1, §4). No dependencies.

/** An API failure, with the fields of the error body of API.md §1. */
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
  }
}

const CODE_TEXT = {
  VALIDATION_FAILED: 'Invalid input',
  INVALID_JSON: 'Invalid request',
  UNAUTHENTICATED: 'Not signed in (token missing, invalid or expired)',
  FORBIDDEN: 'Not allowed',
  NOT_FOUND: 'Not found',
  CONFLICT: 'Already exists',
  PAYLOAD_TOO_LARGE: 'Too large',
  RATE_LIMITED: 'Too many messages, slow down',
  UNAVAILABLE: 'Service unavailable, try again',
  INTERNAL: 'Server error',
  NETWORK: 'Network error: the service cannot be reached',
};

/** One readable line for any error (API error, network failure, bug). */
export function describeError(err) {
  if (err instanceof ApiError) {
    const head = CODE_TEXT[err.code] ?? `Error ${err.status}`;
    const fields = err.details
      .filter((d) => d && typeof d.message === 'string')
      .map((d) => d.message)
      .join('; ');
    const text = fields || err.message;
    return text && text !== head ? `${head}: ${text}` : head;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Builds a query string, leaving out empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * @param {() => string | null} getToken
 */
export function createApi(getToken) {
  async function request(method, path, { body, params } = {}) {
    const headers = { accept: 'application/json' };
    const token = getToken();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path + query(params), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (err) {
      throw new ApiError(0, 'NETWORK', err instanceof Error ? err.message : String(err));
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const e = data && typeof data === 'object' && data.error ? data.error : null;
      throw new ApiError(res.status, e?.code ?? `HTTP_${res.status}`, e?.message ?? (res.statusText || 'request failed'), e?.details);
    }
    return data;
  }

  const seg = encodeURIComponent;
  return {
    request,
    consoleConfig: () => request('GET', '/console/config.json'),
    devToken: (user_id, admin) => request('POST', '/console/dev-token', { body: { user_id, admin } }),
    getUser: (userId) => request('GET', `/api/user/${seg(userId)}`),
    createUser: (body) => request('POST', '/api/user', { body }),
    setRole: (userId, user_role) => request('PUT', `/api/user/${seg(userId)}/role`, { body: { user_role } }),
    groupsOf: (userId) => request('GET', `/api/user/${seg(userId)}/groups`),
    createGroup: (body) => request('POST', '/api/group/create', { body }),
    getGroup: (groupId) => request('GET', `/api/group/${seg(groupId)}`),
    members: (groupId) => request('GET', `/api/group/${seg(groupId)}/members`),
    addMember: (groupId, body) => request('POST', `/api/group/${seg(groupId)}/members`, { body }),
    listMessages: (params) => request('GET', '/api/message/list', { params }),
    send: (body) => request('POST', '/api/message/send', { body }),
    aiInteractions: (params) => request('GET', '/api/ai/interactions', { params }),
  };
}

/** Reads the claims of a JWT without verifying it (display only: the server verifies). */
export function decodeToken(token) {
  const parts = String(token).trim().split('.');
  if (parts.length !== 3) throw new Error('This is not a JWT (expected three dot-separated parts).');
  let claims;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
    );
    claims = JSON.parse(json);
  } catch {
    throw new Error('The token payload cannot be read.');
  }
  if (!claims || typeof claims.sub !== 'string' || claims.sub === '') throw new Error('The token has no sub (user id).');
  const scope = Array.isArray(claims.scope) ? claims.scope.map(String) : typeof claims.scope === 'string' ? claims.scope.split(/\s+/) : [];
  return { user_id: claims.sub, admin: scope.includes('admin'), exp: typeof claims.exp === 'number' ? claims.exp : null };
}

/** A random id for client_msg_id (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function newClientMsgId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return `c-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

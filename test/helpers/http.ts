import type { Test } from 'tap';
import type { Cradle } from '../../kernel/container.js';
import { mergeConfig } from '../../config/loader.js';
import { bootKernel, type BootOptions, type Booted } from './boot.js';
import '../../plugins/http/http.public.js';

export interface BootedHttp {
  booted: Booted;
  /** 'http://127.0.0.1:<ephemeral port>' */
  baseUrl: string;
}

/**
 * bootKernel with the http plugin listening on 127.0.0.1, port 0. `plugins`
 * defaults to the core plus http ('http' is added when missing).
 */
export async function bootHttp(t: Test, opts: BootOptions = {}): Promise<BootedHttp> {
  const plugins = [...(opts.plugins ?? ['auth', 'users', 'groups', 'chat'])];
  if (!plugins.includes('http')) plugins.push('http');
  const config = mergeConfig({ http: { port: 0, host: '127.0.0.1' } }, opts.config ?? {});
  const booted = await bootKernel(t, { ...opts, plugins, config });
  const { host, port } = booted.c.httpAddress;
  return { booted, baseUrl: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
}

/** bootHttp when `http`, else bootKernel: the booted kernel and its base URL ('' without http). */
export async function bootWithOptionalHttp(t: Test, opts: BootOptions, http: boolean): Promise<Booted & { baseUrl: string }> {
  if (!http) return { ...(await bootKernel(t, opts)), baseUrl: '' };
  const h = await bootHttp(t, opts);
  return { ...h.booted, baseUrl: h.baseUrl };
}

/** A bearer token for `userId` signed by the kernel's auth service. */
export function tokenFor(c: Cradle, userId: string, admin = false): Promise<string> {
  return c.authService.sign(userId, { admin });
}

export interface ApiResponse<B = any> {
  status: number;
  /** Parsed JSON when the response is JSON, else the text ('' when empty). */
  body: B;
  headers: Headers;
}

export interface ApiClient {
  get<B = any>(path: string, headers?: Record<string, string>): Promise<ApiResponse<B>>;
  post<B = any>(path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<B>>;
  put<B = any>(path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<B>>;
  del<B = any>(path: string, headers?: Record<string, string>): Promise<ApiResponse<B>>;
}

/**
 * Tiny fetch client: JSON bodies in and out, the token as a bearer header.
 * A string body is sent as it is (to test bad JSON); set content-type in headers to override.
 */
export function api(baseUrl: string, token?: string): ApiClient {
  const call = async (method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<ApiResponse> => {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const res = await fetch(baseUrl + path, { method, headers: { ...headers, ...extra }, body: payload });
    const text = await res.text();
    const isJson = (res.headers.get('content-type') ?? '').includes('json');
    return { status: res.status, body: isJson && text !== '' ? JSON.parse(text) : text, headers: res.headers };
  };
  return {
    get: (path, headers) => call('GET', path, undefined, headers),
    post: (path, body, headers) => call('POST', path, body, headers),
    put: (path, body, headers) => call('PUT', path, body, headers),
    del: (path, headers) => call('DELETE', path, undefined, headers),
  };
}

import ky from 'ky';
import { AiCallError } from '../../../kernel/ports/ai-provider.port.js';

export interface RawResponse {
  status: number;
  ok: boolean;
  /** Parsed JSON when the body is JSON, else the text (null when empty). */
  body: unknown;
  retryAfterMs?: number;
}

/** Retry-After: delta-seconds or an HTTP date; undefined when absent or unparseable. */
export function parseRetryAfter(value: string | null, nowMs = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/**
 * One POST through ky: no ky retries and no ky timeout (the caller's signal
 * carries the per-attempt timeout). Network errors and aborts become
 * retryable AiCallErrors; HTTP statuses are returned, not thrown.
 */
export async function postRaw(url: string, rawBody: string, headers: Record<string, string>, signal: AbortSignal, request: unknown): Promise<RawResponse> {
  let res: Response;
  try {
    res = await ky.post(url, { body: rawBody, headers, signal, retry: 0, timeout: false, throwHttpErrors: false });
  } catch (err) {
    if (signal.aborted) {
      const reason: unknown = signal.reason;
      const timeout = reason instanceof Error && reason.name === 'TimeoutError';
      throw new AiCallError(timeout ? 'timeout: no answer within the attempt timeout' : 'aborted', true, { request });
    }
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new AiCallError(`network error: ${detail}`, true, { request });
  }
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    if (signal.aborted) throw new AiCallError('timeout: no answer within the attempt timeout', true, { request });
    throw new AiCallError(`network error while reading the answer: ${(err as Error).message}`, true, { request });
  }
  let body: unknown = text === '' ? null : text;
  if (text !== '') {
    try {
      body = JSON.parse(text) as unknown;
    } catch {
      // keep the text
    }
  }
  return { status: res.status, ok: res.ok, body, retryAfterMs: parseRetryAfter(res.headers.get('retry-after')) };
}

/** A non-2xx answer as an AiCallError: 408, 429 and 5xx are retryable, other statuses are not. */
export function httpError(res: RawResponse, request: unknown): AiCallError {
  const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
  return new AiCallError(`AI service answered HTTP ${res.status}`, retryable, {
    status: res.status,
    retryAfterMs: res.retryAfterMs,
    request,
    response: { status: res.status, body: res.body },
  });
}

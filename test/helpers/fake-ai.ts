/**
 * A fake AI HTTP service for tests (node:http on an ephemeral port): answers
 * with configurable replies, delays, statuses and failure sequences, and
 * captures every request (headers, raw body, parsed JSON) so a test can check
 * Idempotency-Key, signatures and bodies.
 *
 *   const ai = await startFakeAi(t);                // 200 {"reply": "ok"} by default
 *   ai.enqueue({ status: 500 }, { status: 500 });   // the next two requests fail
 *   ai.respond((req) => ({ body: { reply: `echo ${req.json.message.msg_content}` } }));
 *   await ai.waitForRequests(3);
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Cradle } from '../../kernel/container.js';
import type { AiInteractionRecord } from '../../kernel/domain.js';

export interface FakeAiRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers: IncomingHttpHeaders;
  rawBody: string;
  /** Parsed JSON body (undefined when not JSON). */
  json: any;
  receivedAt: number;
}

export interface FakeAiAnswer {
  /** Default 200. */
  status?: number;
  /** Sent as JSON (default {"reply": "ok"} for 2xx, {"error": "..."} otherwise). */
  body?: unknown;
  /** Sent as it is, instead of `body`. */
  rawBody?: string;
  headers?: Record<string, string>;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Never answer (until the client gives up or the server closes). */
  hang?: boolean;
  /** Destroy the connection without an answer (a network error for the client). */
  destroy?: boolean;
}

export type FakeAiResponder = (req: FakeAiRequest) => FakeAiAnswer | Promise<FakeAiAnswer>;

export interface FakeAi {
  /** Base URL, e.g. http://127.0.0.1:40123 (no trailing slash). */
  readonly url: string;
  readonly requests: FakeAiRequest[];
  /** The answer used when the queue is empty. */
  respond(answer: FakeAiAnswer | FakeAiResponder): void;
  /** Answers for the next requests, in order (a failure sequence). */
  enqueue(...answers: Array<FakeAiAnswer | FakeAiResponder>): void;
  /** Resolves once at least n requests arrived (rejects after timeoutMs). */
  waitForRequests(n: number, timeoutMs?: number): Promise<FakeAiRequest[]>;
  /** Requests currently being answered (delayed or hanging). */
  readonly pending: number;
  close(): Promise<void>;
}

export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export async function startFakeAi(t?: TeardownHost, initial: FakeAiAnswer | FakeAiResponder = { body: { reply: 'ok' } }): Promise<FakeAi> {
  let fallback: FakeAiAnswer | FakeAiResponder = initial;
  const queue: Array<FakeAiAnswer | FakeAiResponder> = [];
  const requests: FakeAiRequest[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const timers = new Set<NodeJS.Timeout>();
  let pending = 0;

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let parsed: unknown;
      try {
        parsed = rawBody === '' ? undefined : JSON.parse(rawBody);
      } catch {
        parsed = undefined;
      }
      const captured: FakeAiRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, rawBody, json: parsed, receivedAt: Date.now() };
      requests.push(captured);
      for (const w of [...waiters]) {
        if (requests.length >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
      const spec = queue.length > 0 ? queue.shift()! : fallback;
      pending++;
      void Promise.resolve(typeof spec === 'function' ? spec(captured) : spec).then((a) => {
        const send = (): void => {
          pending--;
          if (a.destroy) {
            req.socket.destroy();
            return;
          }
          const status = a.status ?? 200;
          const text = a.rawBody ?? JSON.stringify(a.body ?? (status < 300 ? { reply: 'ok' } : { error: `fake error ${status}` }));
          res.writeHead(status, { 'content-type': 'application/json', ...(a.headers ?? {}) });
          res.end(text);
        };
        if (a.hang) return;
        if (a.delayMs && a.delayMs > 0) {
          const timer = setTimeout(() => {
            timers.delete(timer);
            send();
          }, a.delayMs);
          timers.add(timer);
        } else send();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;

  const fake: FakeAi = {
    url: `http://127.0.0.1:${port}`,
    requests,
    get pending() {
      return pending;
    },
    respond(answer) {
      fallback = answer;
    },
    enqueue(...answers) {
      queue.push(...answers);
    },
    waitForRequests(n, timeoutMs = 20_000) {
      if (requests.length >= n) return Promise.resolve(requests);
      return new Promise((resolve, reject) => {
        const w = {
          n,
          resolve: () => {
            clearTimeout(timer);
            resolve(requests);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`fake AI: expected ${n} requests, got ${requests.length} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  t?.teardown(() => fake.close());
  return fake;
}

/** Polls `check` until it returns a truthy value (or throws after timeoutMs): no fixed sleeps in tests. */
export async function waitFor<T>(check: () => T | Promise<T>, what = 'condition', timeoutMs = 20_000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The interaction record of a user message (the newest 10,000 records are searched). */
export async function recordOf(c: Cradle, messageId: string): Promise<AiInteractionRecord | undefined> {
  const all = await c.storage.aiRecords.list({ limit: 10_000 });
  return all.find((r) => r.user_message_id === messageId);
}

/** Waits until the record of a user message has ended with `status` (1 succeeded, 2 failed). */
export async function finalRecord(c: Cradle, messageId: string, status: 1 | 2 = 1): Promise<AiInteractionRecord> {
  return waitFor(async () => {
    const r = await recordOf(c, messageId);
    return r && r.status === status ? r : undefined;
  }, `record of ${messageId} with status ${status}`);
}

/**
 * `ai-router` settings for tests: fast retries and polls, a breaker that does
 * not open by accident, and load shedding on the event-loop delay off (the
 * real delay of a busy test machine must not change a test; the load-shedding
 * tests set their own). Every setting can be overridden per test.
 */
export const FAST_ROUTER = {
  attemptTimeoutMs: 2000,
  maxAttempts: 3,
  backoff: { baseMs: 20, maxMs: 100, factor: 2, jitter: 0.5 },
  pollIntervalMs: 50,
  leaseMs: 10_000,
  breaker: { failureThreshold: 1000, resetMs: 100 },
  loadShedding: { maxEventLoopDelayMs: 0 },
};

import { WebSocket, type ClientOptions } from 'ws';
import type { Test } from 'tap';

/** A frame as received (parsed JSON). */
export type Frame = { type: string } & Record<string, any>;

/**
 * A `ws` test client that records every frame it receives, so a test can wait
 * for a frame matching a predicate (generous timeouts, no fixed sleeps).
 */
export class WsTestClient {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | null = null;
  pings = 0;
  private waiters: Array<() => void> = [];

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()) as Frame);
      this.wake();
    });
    ws.on('ping', () => {
      this.pings++;
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Frames of one type (in arrival order). */
  of(type: string): Frame[] {
    return this.frames.filter((f) => f.type === type);
  }

  /** Waits until a frame received at or after index `from` matches; returns it. */
  async next(pred: (f: Frame) => boolean, what: string, from = 0, timeoutMs = 20_000): Promise<Frame> {
    let found: Frame | undefined;
    await this.until(() => {
      found = this.frames.slice(from).find(pred);
      return found !== undefined;
    }, what, timeoutMs);
    return found!;
  }

  /** Sends a frame and waits for the first answer frame after it that matches. */
  async request(frame: unknown, pred: (f: Frame) => boolean, what: string): Promise<Frame> {
    const from = this.frames.length;
    this.send(frame);
    return this.next(pred, what, from);
  }

  async until(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  waitClosed(what = 'socket closed'): Promise<{ code: number; reason: string }> {
    return this.until(() => this.closed !== null, what).then(() => this.closed!);
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** Opens `ws://…/ws/<userId>?token=…` and resolves once open; closed at teardown. */
export async function connectWs(t: Test, baseUrl: string, userId: string, token: string | null, options: ClientOptions = {}): Promise<WsTestClient> {
  const url = `${baseUrl.replace(/^http/, 'ws')}/ws/${encodeURIComponent(userId)}${token === null ? '' : `?token=${encodeURIComponent(token)}`}`;
  const ws = new WebSocket(url, options);
  const client = new WsTestClient(ws);
  t.teardown(() => client.close());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  return client;
}

/** Tries an upgrade expected to be refused: the HTTP status and JSON body, or the close code when it was accepted then closed. */
export function tryUpgrade(url: string, options: ClientOptions = {}): Promise<{ status?: number; body?: any; closeCode?: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode, body });
        ws.terminate();
      });
    });
    ws.once('close', (code) => resolve({ closeCode: code }));
    ws.once('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Test } from 'tap';

/**
 * A TCP proxy in front of a real broker, so a test can cut the client's
 * connection (dropAll) or make the broker unreachable (refuse) without
 * touching the broker that other test files share. Listens on port 0.
 */
export interface TcpProxy {
  readonly port: number;
  /** Destroys every proxied connection (both sides). */
  dropAll(): void;
  /** While true, new connections are closed at once (the broker looks down). */
  refuse(on: boolean): void;
  /** Connections currently proxied. */
  readonly connections: number;
  close(): Promise<void>;
}

export async function startTcpProxy(t: Test, targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect({ port: targetPort, host: targetHost });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const proxy: TcpProxy = {
    port,
    dropAll() {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    refuse(on) {
      refusing = on;
    },
    get connections() {
      return pairs.size;
    },
    close() {
      proxy.dropAll();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  t.teardown(() => proxy.close());
  return proxy;
}

/** Polls `cond` until it holds (generous timeout, no fixed sleeps in assertions). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

import { Loadgen, sleep } from '../lib/children.js';
import { fdSoftLimit, processRss, round } from '../lib/proc.js';
import type { ConnectResult } from '../lib/protocol.js';
import { user } from './fixtures.js';
import type { Log, Options, Target, TargetResult } from './common.js';

/**
 * S5: `o.s5Connections` idle authenticated WebSocket connections (one user
 * each, handshake = ping/pong answered, so auth and subscriptions are done),
 * spread over as many load-generator processes as the file-descriptor limit
 * needs. Figure: server RSS growth per connection.
 */
export async function runS5(t: Target, o: Options, log: Log): Promise<TargetResult> {
  const n = o.s5Connections;
  const perProc = Math.max(1000, fdSoftLimit() - 1500);
  const nProcs = Math.ceil(n / perProc);
  const extra: Loadgen[] = [];
  for (let i = 1; i < nProcs; i++) extra.push(new Loadgen());
  const gens = [t.loadgen, ...extra];
  try {
    // warm-up: load the connection code paths (and JIT them) before the baseline
    const warm = Array.from({ length: Math.min(200, n) }, (_, i) => user(i));
    await t.loadgen.call<ConnectResult>({ cmd: 'connect', kind: t.kind, baseUrl: t.server.baseUrl, users: warm, secret: t.secret, concurrency: 64, handshake: true });
    await t.loadgen.call({ cmd: 'close' });
    await sleep(o.quick ? 1000 : 2000);
    const before = processRss(t.server.pid) ?? 0;
    const t0 = performance.now();
    const users = Array.from({ length: n }, (_, i) => user(i));
    const results = await Promise.all(
      gens.map((g, k) =>
        g.call<ConnectResult>({
          cmd: 'connect',
          kind: t.kind,
          baseUrl: t.server.baseUrl,
          users: users.slice(k * perProc, (k + 1) * perProc),
          secret: t.secret,
          concurrency: 64,
          handshake: true,
        }),
      ),
    );
    const connectMs = Math.round(performance.now() - t0);
    const connected = results.reduce((s, r) => s + r.connected, 0);
    const failed = results.reduce((s, r) => s + r.failed, 0);
    const firstError = results.find((r) => r.firstError)?.firstError;
    await sleep(o.quick ? 1500 : 3000);
    const after = processRss(t.server.pid) ?? 0;
    const perConn = connected ? (after - before) / connected / 1024 : 0;
    log(
      `  S5 ${t.name}: ${connected} connections (${failed} failed${firstError ? `: ${firstError}` : ''}) in ${connectMs} ms; ` +
        `RSS ${round(before / 2 ** 20, 1)} -> ${round(after / 2 ** 20, 1)} MiB = ${round(perConn, 2)} KB/connection`,
    );
    return {
      figure: round(perConn, 2),
      unit: 'KB RSS per connection',
      extra: {
        connections: connected,
        failed,
        first_error: firstError,
        loadgen_processes: gens.length,
        connect_ms: connectMs,
        connects_per_s: Math.round(connected / (connectMs / 1000)),
        rss_before_mib: round(before / 2 ** 20, 1),
        rss_after_mib: round(after / 2 ** 20, 1),
      },
      error: failed > 0 ? `${failed} connections failed: ${firstError}` : undefined,
    };
  } finally {
    await Promise.all(gens.map((g) => g.call({ cmd: 'close' }).catch(() => undefined)));
    await Promise.all(extra.map((g) => g.stop()));
    await sleep(1000);
  }
}

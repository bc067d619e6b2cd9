import type { ConnectResult, Sender, StepResult } from '../lib/protocol.js';
import { S1, s1Groups, s2Groups, usersOf } from './fixtures.js';
import { firstRate, sweep, sweepResult, type Log, type Options, type Target, type TargetResult } from './common.js';

/** Connect every member of `groups` on the target; throws when any socket fails. */
export async function connectMembers(t: Target, groups: Record<string, string[]>, log: Log): Promise<void> {
  const users = usersOf(groups);
  const r = await t.loadgen.call<ConnectResult>({
    cmd: 'connect',
    kind: t.kind,
    baseUrl: t.server.baseUrl,
    users,
    secret: t.secret,
    concurrency: 64,
    handshake: true,
  });
  log(`  connected ${r.connected} sockets in ${r.ms} ms (${r.failed} failed${r.firstError ? `: ${r.firstError}` : ''})`);
  if (r.failed > 0) throw new Error(`${r.failed} of ${users.length} sockets failed to connect: ${r.firstError}`);
}

export async function closeSockets(t: Target): Promise<void> {
  await t.loadgen.call({ cmd: 'close' });
  await new Promise((r) => setTimeout(r, 500));
}

/** First sweep rate (messages/s): target ÷ 1.25^k, so one step lands exactly on the target (S1: 1,000 msg/s = 100,000 deliveries/s; S2: 5,000 msg/s). */
const START: Record<string, [full: number, quick: number]> = {
  S1: [262, 262],
  S2: [1311, 1311],
};
const PEER_START: Record<string, [full: number, quick: number]> = {
  S1: [512, 512],
  S2: [2560, 2560],
};

/**
 * S1 (10 groups × 100 members online, sends over WS) and S2 (1,000 groups ×
 * 10 members, one sender per group): open-loop sweep of the send rate; every
 * member's receipt is a delivery; knee = highest rate with p99 ≤ 50 ms and
 * 100 % delivery (and every send acked).
 */
export async function runFanout(id: 'S1' | 'S2', t: Target, o: Options, log: Log, keepOpen = false): Promise<TargetResult> {
  const groups = id === 'S1' ? s1Groups() : s2Groups();
  await t.setGroups(groups);
  await connectMembers(t, groups, log);
  const senders: Sender[] = [];
  const names = Object.keys(groups);
  if (id === 'S1') {
    for (let j = 0; j < S1.sendersPerGroup; j++) for (const g of names) senders.push({ user_id: groups[g]![j]!, group_id: g, expected: groups[g]!.length });
  } else {
    for (const g of names) senders.push({ user_id: groups[g]![0]!, group_id: g, expected: groups[g]!.length });
  }
  const perMsg = groups[names[0]!]!.length;
  // warm-up (JIT, connection pools), not reported
  await t.loadgen.call<StepResult>({ cmd: 'wsStep', rate: 100, durationMs: 1000, drainMs: 3000, senders, via: 'socket', acks: true });
  const startPair = (t.name === 'service' ? START : PEER_START)[id]!;
  const sw = await sweep({
    target: t,
    start: firstRate(o, o.quick ? startPair[1] : startPair[0]),
    maxSteps: o.maxSteps,
    p99LimitMs: 50,
    wantAcks: true,
    label: `${id} ${t.name}`,
    log,
    run: (rate) => t.loadgen.call<StepResult>({ cmd: 'wsStep', rate, durationMs: o.stepMs, drainMs: o.drainMs, senders, via: 'socket', acks: true }),
  });
  if (!keepOpen) await closeSockets(t);
  return sweepResult(sw, id === 'S1' ? 'deliveries/s' : 'messages/s', {
    figure: id === 'S1' ? (sw.knee?.deliveries_per_s ?? 0) : undefined,
    extra: { deliveries_per_message: perMsg, senders: senders.length },
  });
}

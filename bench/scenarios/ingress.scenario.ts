import { createServer, type Server } from 'node:http';
import type { Sender, StepResult } from '../lib/protocol.js';
import { AI_USER, s2Groups } from './fixtures.js';
import { closeSockets, connectMembers } from './fanout.scenario.js';
import { firstRate, sweep, sweepResult, stepRecord, snapshot, waitServerIdle, type Log, type Options, type StepRecord, type Target, type TargetResult } from './common.js';
import { cpuBetween } from '../lib/proc.js';

function s2Senders(groups: Record<string, string[]>): Sender[] {
  return Object.entries(groups).map(([group_id, m]) => ({ user_id: m[0]!, group_id, expected: m.length }));
}

/**
 * S6: publish `{from_user_id, group_id, msg_content, client_msg_id}` to
 * im.inbound (AMQP queue or NATS subject) from the load generator; the
 * service stores each message and pushes it to the group's 10 online members.
 * Knee = highest publish rate with 100 % delivered to every member and p99
 * (publish -> receipt) ≤ 50 ms. Target ≥ 10,000 messages/s each.
 */
export async function runS6(via: 'amqp' | 'nats', url: string, t: Target, o: Options, log: Log): Promise<TargetResult> {
  const groups = s2Groups();
  await connectMembers(t, groups, log); // no-op for sockets S2 left open
  const senders = s2Senders(groups);
  try {
    const call = (rate: number, durationMs: number): Promise<StepResult> =>
      t.loadgen.call<StepResult>({ cmd: 'wsStep', rate, durationMs, drainMs: o.drainMs, senders, via, brokerUrl: url, acks: false });
    await call(200, 1000); // warm-up
    const sw = await sweep({
      target: t,
      start: firstRate(o, 2097), // 10,000 ÷ 1.25^7
      maxSteps: o.maxSteps,
      p99LimitMs: 50,
      wantAcks: false,
      label: `S6 ${via}`,
      log,
      run: (rate) => call(rate, o.stepMs),
    });
    return sweepResult(sw, 'messages/s');
  } catch (err) {
    await closeSockets(t);
    throw err;
  }
}

/** A fake AI service: answers every webhook call after `delayMs` with `{"reply": "r" + message content}`. */
export class FakeAi {
  /** Webhook calls, retries included. */
  calls = 0;
  /** Per load-generator step (`b<step>.` of the content): distinct message indexes the AI was asked about (a retried call counts once). */
  readonly asked = new Map<string, Set<string>>();
  private server: Server | null = null;
  port = 0;

  constructor(private readonly delayMs: number) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.calls++;
        let content = '';
        try {
          const message = (JSON.parse(Buffer.concat(chunks).toString()) as { message?: { msg_content?: string } }).message;
          content = String(message?.msg_content ?? '');
          const m = /^b(\d+)\.(\d+)\./.exec(content);
          if (m) {
            let set = this.asked.get(m[1]!);
            if (!set) this.asked.set(m[1]!, (set = new Set()));
            set.add(m[2]!);
          }
        } catch {
          /* empty reply */
        }
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ reply: `r${content}` }));
        }, this.delayMs);
      });
    });
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    const a = this.server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
    return `http://127.0.0.1:${this.port}/ai`;
  }

  /** Distinct messages of the step the AI was asked most about (S7 runs one step). */
  forwardedOfStep(): number {
    return Math.max(0, ...[...this.asked.values()].map((x) => x.size));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** One S7 step: its figures, and how many of its messages reached the AI by the end of the wait. */
interface S7Step {
  rec: StepRecord;
  res: StepResult;
  /** Distinct messages of the step the AI was asked about (a retried call counts once). */
  forwarded: number;
  /** Webhook calls, retries included. */
  aiCalls: number;
  sendP99: number;
}

/** The AI layer sustained the step: every message forwarded, and the step passed (send p99 within S2's 50 ms, all delivered). */
const sustainedStep = (x: S7Step): boolean => x.rec.pass && x.forwarded >= x.res.sent;

/** The sustained-rate part of S7's figure: the best passing step, or the lowest one tried when none passed. */
function sustainedText(best: S7Step | null, tried: readonly S7Step[]): string {
  if (best) return `${best.rec.rate}/s (send p99 ${best.sendP99} ms)`;
  const lowest = tried.at(-1);
  return lowest ? `none of ${tried.length} steps down to ${lowest.rec.rate}/s (send p99 ${lowest.sendP99} ms there)` : 'not searched (the first step passed)';
}

/**
 * S7: the AI router on, every S2 group has an AI_ASSISTANT member, every
 * message (from a PATIENT) is forwarded to a fake AI answering in 200 ms, whose
 * reply is stored and pushed to the members. Sends at S2's knee rate; the send
 * p99 (send -> ack) and delivery p99 are compared with S2's knee step (AI off).
 * When that step fails, the rate the AI layer sustains is searched for down
 * S2's ladder, each step on a restarted service (see run.ts).
 */
export async function runS7(
  first: Target,
  restart: () => Promise<Target>,
  o: Options,
  log: Log,
  rate: number,
  fake: FakeAi,
  baseline: TargetResult | undefined,
): Promise<TargetResult> {
  // quick runs use the first 200 S2 groups (2,000 sockets instead of 10,000) at the same rate
  const groups = Object.fromEntries(Object.entries(s2Groups()).slice(0, o.quick ? 200 : undefined));
  const senders = s2Senders(groups);
  let t = first;
  const prepare = async (): Promise<void> => {
    await t.admin!.addMembers(Object.keys(groups).map((group_id) => ({ group_id, user_id: AI_USER, user_role: 'AI_ASSISTANT' })));
    await connectMembers(t, groups, log);
    await t.loadgen.call<StepResult>({ cmd: 'wsStep', rate: 100, durationMs: 1000, drainMs: 3000, senders, via: 'socket', acks: true });
  };
  // Each step after the first runs on a restarted service whose pending AI records were
  // abandoned: an overloaded step leaves a backlog that would otherwise be worked during the next.
  const fresh = async (): Promise<void> => {
    await closeSockets(t);
    t = await restart();
    await prepare();
  };
  const baseAck = baseline?.knee?.ack_latency?.p99_ms;
  const baseDel = baseline?.knee?.latency.p99_ms;
  const step = async (r: number): Promise<S7Step> => {
    await waitServerIdle(t, 20_000);
    const callsBefore = fake.calls;
    fake.asked.clear();
    const a = snapshot(t);
    const res = await t.loadgen.call<StepResult>({
      cmd: 'wsStep',
      rate: r,
      durationMs: o.quick ? o.stepMs : o.stepMs * 2,
      drainMs: o.drainMs + 1000,
      senders,
      via: 'socket',
      acks: true,
    });
    // let the 200 ms answers come back and be stored, then count what reached the AI
    const end = Date.now() + (o.quick ? 4000 : 15_000);
    while (fake.forwardedOfStep() < res.sent && Date.now() < end) await new Promise((done) => setTimeout(done, 100));
    const rec = stepRecord(res, cpuBetween(a, snapshot(t)), 50, true);
    const x: S7Step = { rec, res, forwarded: fake.forwardedOfStep(), aiCalls: fake.calls - callsBefore, sendP99: rec.ack_latency?.p99_ms ?? 0 };
    log(
      `  S7: rate ${r}/s: forwarded ${x.forwarded}/${res.sent} (${x.aiCalls} calls), AI replies delivered ${res.aiReplies}, send p99 ${x.sendP99} ms ` +
        `(S2 knee ${baseAck ?? '?'} ms), delivery p99 ${x.rec.latency.p99_ms} ms ${sustainedStep(x) ? 'PASS' : `FAIL (${x.rec.why_not ?? 'not every message forwarded'})`}`,
    );
    return x;
  };
  try {
    await prepare();
    // the target: S2's knee
    const first = await step(rate);
    const within = baseAck ? first.sendP99 <= baseAck * 1.2 : null;
    // then the highest rate the AI layer sustains: every message forwarded, sends within S2's p99 limit (50 ms);
    // down S2's ladder two rungs (÷1.5625) at a time until a step passes, then one rung back up
    const sustained: S7Step[] = [];
    let best: S7Step | null = sustainedStep(first) ? first : null;
    if (!best) {
      let r = rate;
      for (let i = 0; i < (o.quick ? 2 : 4) && !best; i++) {
        r = Math.round(r / 1.5625);
        await fresh();
        const x = await step(r);
        sustained.push(x);
        if (sustainedStep(x)) best = x;
      }
      if (best) {
        await fresh();
        const up = await step(Math.round(best.rec.rate * 1.25));
        sustained.push(up);
        if (sustainedStep(up)) best = up;
      }
    }
    return {
      figure: rate,
      unit: `messages/s offered (S2's knee): forwarded ${first.forwarded}/${first.res.sent}, send p99 ${first.sendP99} ms vs ${baseAck ?? '?'} ms in S2; sustained with every message forwarded and send p99 ≤ 50 ms: ${sustainedText(best, sustained)}`,
      per_server_cpu_s: first.rec.deliveries_per_server_cpu_s,
      knee: first.rec,
      steps: [first.rec, ...sustained.map((x) => x.rec)],
      extra: {
        groups: Object.keys(groups).length,
        forwarded: first.forwarded,
        ai_calls: first.aiCalls,
        sent: first.res.sent,
        all_forwarded: first.forwarded >= first.res.sent,
        ai_reply_deliveries: first.res.aiReplies,
        send_p99_ms: first.sendP99,
        s2_send_p99_ms: baseAck ?? null,
        send_p99_within_20pct: within,
        delivery_p99_ms: first.rec.latency.p99_ms,
        s2_delivery_p99_ms: baseDel ?? null,
        sustained_rate: best?.rec.rate ?? null,
        sustained_send_p99_ms: best?.sendP99 ?? null,
        sustained_steps: sustained
          .map((x) => `${x.rec.rate}/s: forwarded ${x.forwarded}/${x.res.sent}, send p99 ${x.sendP99} ms ${sustainedStep(x) ? '✓' : '✗'}`)
          .join('; '),
      },
    };
  } finally {
    await closeSockets(t);
  }
}

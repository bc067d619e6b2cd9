import { createServer, type Server } from 'node:http';
import type { Sender, StepResult } from '../lib/protocol.js';
import { AI_USER, s2Groups } from './fixtures.js';
import { closeSockets, connectMembers } from './fanout.scenario.js';
import { sweep, sweepResult, stepRecord, snapshot, type Log, type Options, type Target, type TargetResult } from './common.js';
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
      start: 2097, // 10,000 ÷ 1.25^7
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

/**
 * S7: the AI router on, every S2 group has an AI_ASSISTANT member, every
 * message (from a PATIENT) is forwarded to a fake AI answering in 200 ms, whose
 * reply is stored and pushed to the members. Sends at S2's knee rate; the send
 * p99 (send -> ack) and delivery p99 are compared with S2's knee step (AI off).
 */
export async function runS7(t: Target, o: Options, log: Log, rate: number, fake: FakeAi, baseline: TargetResult | undefined): Promise<TargetResult> {
  // quick runs use the first 200 S2 groups (2,000 sockets instead of 10,000) at the same rate
  const groups = Object.fromEntries(Object.entries(s2Groups()).slice(0, o.quick ? 200 : undefined));
  await t.admin!.addMembers(Object.keys(groups).map((group_id) => ({ group_id, user_id: AI_USER, user_role: 'AI_ASSISTANT' })));
  await connectMembers(t, groups, log);
  const senders = s2Senders(groups);
  try {
    await t.loadgen.call<StepResult>({ cmd: 'wsStep', rate: 100, durationMs: 1000, drainMs: 3000, senders, via: 'socket', acks: true });
    const callsBefore = fake.calls;
    fake.asked.clear();
    const a = snapshot(t);
    const r = await t.loadgen.call<StepResult>({
      cmd: 'wsStep',
      rate,
      durationMs: o.quick ? o.stepMs : o.stepMs * 2,
      drainMs: o.drainMs + 1000,
      senders,
      via: 'socket',
      acks: true,
    });
    // let the 200 ms answers come back and be stored, then count what reached the AI
    const end = Date.now() + (o.quick ? 4000 : 15_000);
    while (fake.forwardedOfStep() < r.sent && Date.now() < end) await new Promise((res) => setTimeout(res, 100));
    const b = snapshot(t);
    const rec = stepRecord(r, cpuBetween(a, b), 50, true);
    // distinct messages of the step (a retried call counts once); calls include retries
    const forwarded = fake.forwardedOfStep();
    const aiCalls = fake.calls - callsBefore;
    const baseAck = baseline?.knee?.ack_latency?.p99_ms;
    const baseDel = baseline?.knee?.latency.p99_ms;
    const sendP99 = rec.ack_latency?.p99_ms ?? 0;
    const within = baseAck ? sendP99 <= baseAck * 1.2 : null;
    log(
      `  S7: rate ${rate}/s: forwarded ${forwarded}/${r.sent} (${aiCalls} calls), AI replies delivered ${r.aiReplies}, send p99 ${sendP99} ms ` +
        `(S2 ${baseAck ?? '?'} ms), delivery p99 ${rec.latency.p99_ms} ms (S2 ${baseDel ?? '?'} ms) ${rec.pass ? 'PASS' : `FAIL (${rec.why_not})`}`,
    );
    return {
      figure: rate,
      unit: `messages/s offered (S2's knee): forwarded ${forwarded}/${r.sent}, send p99 ${sendP99} ms vs ${baseAck ?? '?'} ms in S2`,
      per_server_cpu_s: rec.deliveries_per_server_cpu_s,
      knee: rec,
      steps: [rec],
      extra: {
        groups: Object.keys(groups).length,
        forwarded,
        ai_calls: aiCalls,
        sent: r.sent,
        all_forwarded: forwarded >= r.sent,
        ai_reply_deliveries: r.aiReplies,
        send_p99_ms: sendP99,
        s2_send_p99_ms: baseAck ?? null,
        send_p99_within_20pct: within,
        delivery_p99_ms: rec.latency.p99_ms,
        s2_delivery_p99_ms: baseDel ?? null,
      },
    };
  } finally {
    await closeSockets(t);
  }
}

/**
 * The load generator: a separate process driven by bench/run.ts over IPC.
 * Senders and receivers live in this one process and stamp/read the shared
 * monotonic clock (bench/lib/hist.ts nowUs), so send -> receipt latency needs
 * no cross-process clock sync. Sends are open-loop: the schedule never waits
 * for answers, and latency is measured from the *intended* send time.
 * Receiving is the hot path (every delivery): every socket (WS, and Socket.IO
 * over its websocket transport) uses a lean client that reads all sockets
 * into one buffer (ws-client.ts), and `message`/`ack` frames are read from
 * the bytes without a JSON.parse (frames.ts).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { Pool, type Dispatcher } from 'undici';
import { Histogram, nowUs } from '../lib/hist.js';
import { readContent, readFastFrame, readFastSocketIoEvent, type BenchContent, type FastFrame } from './frames.js';
import { WsClient } from './ws-client.js';
import type {
  ConnectCmd,
  ConnectResult,
  HttpStepCmd,
  LoadgenCmd,
  LoadgenReply,
  StepResult,
  WsStepCmd,
} from '../lib/protocol.js';

/** Tag unique to this process: client_msg_ids never collide with an earlier run on the same database. */
const RUN = randomBytes(3).toString('hex');

interface Conn {
  user_id: string;
  /** Send one message (a `send` frame over WS, a `send` event over Socket.IO). */
  send(group_id: string, msg_content: string, client_msg_id: string): void;
  close(): void;
}

const conns = new Map<string, Conn>();
const tokens = new Map<string, string>();

async function tokenFor(secret: string, user: string): Promise<string> {
  let t = tokens.get(user);
  if (!t) {
    t = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime('2h')
      .sign(new TextEncoder().encode(secret));
    tokens.set(user, t);
  }
  return t;
}

// ---------------------------------------------------------------- step state
let stepId = 0;
let step: {
  id: number;
  delivered: Int32Array;
  expected: Int32Array;
  acked: Uint8Array;
  hist: Histogram;
  ackHist: Histogram;
  deliveries: number;
  duplicates: number;
  late: number;
  acks: number;
  aiReplies: number;
  errors: Record<string, number>;
  firstError?: string;
} | null = null;
let lastFrameAt = 0;

function countError(code: string, detail?: string): void {
  if (!step) return;
  step.errors[code] = (step.errors[code] ?? 0) + 1;
  if (!step.firstError && detail) step.firstError = detail.slice(0, 300);
}

/** Scratch for the frame being read (one at a time: no allocation per frame). */
const frame: FastFrame = { kind: 'other', step: 0, index: 0, intendedUs: 0, ack: false };

/** One `message` (a delivery) or `ack` frame: content `b<step>.<i>.<intendedUs>`; AI replies echo it as `r...`. */
function onContent(c: BenchContent, isAck: boolean): void {
  const now = nowUs();
  lastFrameAt = now;
  const st = step;
  if (!st) return;
  if (c.kind === 'ai') {
    if (!isAck) st.aiReplies++;
    return;
  }
  if (c.kind !== 'bench') return;
  if (c.step !== st.id) {
    st.late++;
    return;
  }
  const i = c.index;
  const t = c.intendedUs;
  if (isAck) {
    if (st.acked[i] === 0) {
      st.acked[i] = 1;
      st.acks++;
      st.ackHist.add(now - t);
    }
    return;
  }
  st.delivered[i]!++;
  if (st.delivered[i]! > st.expected[i]!) st.duplicates++;
  else {
    st.deliveries++;
    st.hist.add(now - t);
  }
}

/** A content string (WS frames and Socket.IO events that took the JSON.parse path). */
function onContentString(content: string, isAck: boolean): void {
  readContent(content, frame);
  onContent(frame, isAck);
}

/** The fields of a server frame (API.md §5) the load generator looks at. */
interface ServerFrame {
  type?: unknown;
  code?: unknown;
  data?: { msg_content?: unknown } | null;
}

/**
 * One WS text frame's payload, b[start, end). `message` and `ack` frames of
 * the known shape are read from the bytes (frames.ts); every other frame is
 * decoded and parsed. Returns the type of a parsed frame ('' when read from
 * the bytes), so the handshake can spot its pong.
 */
function onWsFrame(b: Buffer, start: number, end: number): string {
  if (readFastFrame(b, start, end, frame)) {
    onContent(frame, frame.ack);
    return '';
  }
  lastFrameAt = nowUs();
  const text = b.toString('utf8', start, end);
  let f: ServerFrame;
  try {
    f = JSON.parse(text) as ServerFrame;
  } catch {
    countError('unparseable_frame', text);
    return '';
  }
  if (typeof f !== 'object' || f === null) return '';
  const content = f.data?.msg_content;
  if (f.type === 'message' && typeof content === 'string') onContentString(content, false);
  else if (f.type === 'ack' && typeof content === 'string') onContentString(content, true);
  else if (f.type === 'error') countError(String(f.code ?? 'error'), text);
  return typeof f.type === 'string' ? f.type : '';
}

// ---------------------------------------------------------------- connect
/** A connection attempt that settles once: ready, or failed; it fails by itself after 30 s. */
function handshake(timeoutMessage: string, onReady: () => void, onFail: (err: Error) => void): { readonly settled: boolean; done(): void; fail(err: Error): void } {
  let settled = false;
  const settle = (): boolean => {
    if (settled) return false;
    settled = true;
    clearTimeout(timer);
    return true;
  };
  const timer = setTimeout(() => {
    if (settle()) onFail(new Error(timeoutMessage));
  }, 30_000);
  return {
    get settled() {
      return settled;
    },
    done: () => {
      if (settle()) onReady();
    },
    fail: (err) => {
      if (settle()) onFail(err);
    },
  };
}

/**
 * One WS connection through the lean client (ws-client.ts: the frames the
 * server sees are the `ws` client's; reads cost less on this side). With
 * `handshake`, it is ready once a ping got its pong (auth and group
 * subscriptions done).
 */
function openWs(cmd: ConnectCmd, user: string, token: string | undefined): Promise<Conn> {
  const base = new URL(cmd.baseUrl);
  return new Promise((resolve, reject) => {
    const ws: WsClient = new WsClient({
      host: base.hostname,
      port: Number(base.port),
      path: `/ws/${encodeURIComponent(user)}${token ? `?token=${token}` : ''}`,
      onOpen: () => {
        if (cmd.handshake) ws.send('{"type":"ping"}');
        else hs.done();
      },
      onText: (b, start, end) => {
        if (onWsFrame(b, start, end) === 'pong' && !hs.settled) hs.done();
      },
      onError: (err) => hs.fail(err),
      onClose: (code) => {
        if (!hs.settled) hs.fail(new Error(`closed during handshake: ${code}`));
        else if (conns.get(user) === conn) {
          conns.delete(user);
          if (code !== 1000 && code !== 1005 && code !== 1006) countError(`closed_${code}`);
        }
      },
    });
    const conn: Conn = {
      user_id: user,
      send: (g, content, cid) => ws.send(`{"type":"send","group_id":"${g}","msg_content":"${content}","client_msg_id":"${cid}"}`),
      close: () => ws.terminate(),
    };
    const hs = handshake('handshake: no pong within 30 s', () => resolve(conn), (err) => {
      ws.terminate();
      reject(err);
    });
  });
}

/** The Socket.IO packets the load generator reads past the fast path: `42` + JSON `[event, arg]`. */
type SocketIoEvent = [string, { code?: unknown; data?: { msg_content?: unknown } | null } | undefined];

/**
 * One Socket.IO connection (websocket transport) through the same lean
 * client, writing and reading the packets socket.io-client would (Engine.IO 4,
 * Socket.IO 5): `0{…}` open -> `40{auth}` -> `40{sid}`, then events
 * `42["name",arg]` and heartbeats (`2` -> `3`). Ready once the peer's `ready`
 * event arrived. `message`/`ack` events are read from the bytes (frames.ts).
 */
function openSocketIo(cmd: ConnectCmd, user: string): Promise<Conn> {
  const base = new URL(cmd.baseUrl);
  return new Promise((resolve, reject) => {
    const ws: WsClient = new WsClient({
      host: base.hostname,
      port: Number(base.port),
      path: '/socket.io/?EIO=4&transport=websocket',
      onOpen: () => undefined, // the server speaks first (Engine.IO open packet)
      onText: (b, start, end) => {
        if (readFastSocketIoEvent(b, start, end, frame)) return onContent(frame, frame.ack);
        lastFrameAt = nowUs();
        const p = b.toString('utf8', start, end);
        if (p === '2') ws.send('3'); // Engine.IO ping -> pong
        else if (p.startsWith('0')) ws.send(`40${JSON.stringify({ user_id: user })}`); // open -> connect with auth
        else if (p.startsWith('44')) hs.fail(new Error(`connect_error: ${p.slice(2, 300)}`));
        else if (p === '1' || p.startsWith('41')) ws.terminate(); // closed / disconnected by the server
        else if (p.startsWith('42')) onSocketIoEvent(p, () => hs.done());
      },
      onError: (err) => hs.fail(err),
      onClose: (code) => {
        if (!hs.settled) hs.fail(new Error(`closed during handshake: ${code}`));
        else if (conns.get(user) === conn) conns.delete(user);
      },
    });
    const conn: Conn = {
      user_id: user,
      send: (g, content, cid) => ws.send(`42["send",{"group_id":"${g}","msg_content":"${content}","client_msg_id":"${cid}"}]`),
      close: () => {
        ws.send('41'); // disconnect, as socket.disconnect() does
        ws.terminate();
      },
    };
    const hs = handshake('handshake: no ready event within 30 s', () => resolve(conn), (err) => {
      ws.terminate();
      reject(err);
    });
  });
}

/** A Socket.IO event that took the JSON.parse path: `ready`, the peer's `error_frame`, or a message/ack in another shape. */
function onSocketIoEvent(packet: string, onReady: () => void): void {
  let ev: SocketIoEvent;
  try {
    ev = JSON.parse(packet.slice(2)) as SocketIoEvent;
  } catch {
    countError('unparseable_frame', packet);
    return;
  }
  if (!Array.isArray(ev)) return;
  const [name, arg] = ev;
  const content = arg?.data?.msg_content;
  if (name === 'ready') onReady();
  else if (name === 'message' && typeof content === 'string') onContentString(content, false);
  else if (name === 'ack' && typeof content === 'string') onContentString(content, true);
  else if (name === 'error_frame') countError(String(arg?.code ?? 'error'), packet);
}

async function connect(cmd: ConnectCmd): Promise<ConnectResult> {
  const t0 = performance.now();
  let connected = 0;
  let failed = 0;
  let firstError: string | undefined;
  const queue = cmd.users.filter((u) => !conns.has(u));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < queue.length) {
      const user = queue[next++]!;
      try {
        const token = cmd.secret ? await tokenFor(cmd.secret, user) : undefined;
        const c = cmd.kind === 'ws' ? await openWs(cmd, user, token) : await openSocketIo(cmd, user);
        conns.set(user, c);
        connected++;
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, cmd.concurrency) }, worker));
  return { connected, failed, firstError, ms: Math.round(performance.now() - t0), total: conns.size };
}

function closeAll(): { closed: number } {
  const n = conns.size;
  for (const c of conns.values()) c.close();
  conns.clear();
  return { closed: n };
}

// ---------------------------------------------------------------- steps
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Run `send(i, intendedUs)` for i in [0,total) on an open-loop schedule at `rate`/s. */
async function schedule(rate: number, total: number, send: (i: number, t: number) => void): Promise<number> {
  const interval = 1e6 / rate;
  const start = nowUs() + 1000;
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor((nowUs() - start) / interval) + 1);
    while (i < due) {
      send(i, start + i * interval);
      i++;
    }
    if (i < total) await sleep(1);
  }
  return (nowUs() - start) / 1e6;
}

/** Wait until no frame arrived for `quietMs` (bounded): lets a backlog from an overloaded step drain. */
async function quiet(quietMs: number, maxMs: number): Promise<void> {
  const end = performance.now() + maxMs;
  while (performance.now() < end && nowUs() - lastFrameAt < quietMs * 1000) await sleep(50);
}

async function wsStep(cmd: WsStepCmd): Promise<StepResult> {
  await quiet(300, 10_000);
  const total = Math.max(1, Math.floor((cmd.rate * cmd.durationMs) / 1000));
  const id = ++stepId;
  const st = {
    id,
    delivered: new Int32Array(total),
    expected: new Int32Array(total),
    acked: new Uint8Array(total),
    hist: new Histogram(),
    ackHist: new Histogram(),
    deliveries: 0,
    duplicates: 0,
    late: 0,
    acks: 0,
    aiReplies: 0,
    errors: {} as Record<string, number>,
    firstError: undefined as string | undefined,
  };
  step = st;
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  let expectedTotal = 0;
  let publish: ((payload: string) => void) | null = null;
  let closeBroker: () => Promise<void> = async () => undefined;
  if (cmd.via === 'amqp') {
    const amqp = await import('amqplib');
    const model = await amqp.connect(cmd.brokerUrl!);
    const ch = await model.createChannel();
    const queue = cmd.subject ?? 'im.inbound';
    publish = (p) => {
      ch.sendToQueue(queue, Buffer.from(p), { contentType: 'application/json', persistent: true });
    };
    closeBroker = async () => {
      await ch.close().catch(() => undefined);
      await model.close().catch(() => undefined);
    };
  } else if (cmd.via === 'nats') {
    const { connect: natsConnect } = await import('@nats-io/transport-node');
    const nc = await natsConnect({ servers: cmd.brokerUrl! });
    const subject = cmd.subject ?? 'im.inbound';
    publish = (p) => nc.publish(subject, p);
    closeBroker = async () => {
      await nc.drain().catch(() => undefined);
    };
  }
  const t0 = performance.now();
  const senders = cmd.senders;
  const sendSeconds = await schedule(cmd.rate, total, (i, t) => {
    const s = senders[i % senders.length]!;
    const content = `b${id}.${i}.${t.toFixed(0)}`;
    const cid = `${RUN}.${id}.${i}`;
    st.expected[i] = s.expected;
    expectedTotal += s.expected;
    if (publish) {
      publish(
        `{"from_user_id":"${s.user_id}","group_id":"${s.group_id}","msg_content":"${content}","client_msg_id":"${cid}"}`,
      );
      return;
    }
    const c = conns.get(s.user_id);
    if (!c) {
      countError('sender_not_connected', s.user_id);
      return;
    }
    c.send(s.group_id, content, cid);
  });
  const drainEnd = performance.now() + cmd.drainMs;
  while (performance.now() < drainEnd) {
    if (st.deliveries >= expectedTotal && (!cmd.acks || st.acks >= total)) break;
    await sleep(5);
  }
  lag.disable();
  await closeBroker();
  step = null;
  let incomplete = 0;
  for (let i = 0; i < total; i++) if (st.delivered[i]! < st.expected[i]!) incomplete++;
  return {
    rate: cmd.rate,
    durationMs: cmd.durationMs,
    sent: total,
    achievedRate: Math.round(total / Math.max(0.001, sendSeconds)),
    expectedDeliveries: expectedTotal,
    deliveries: st.deliveries,
    duplicates: st.duplicates,
    late: st.late,
    incomplete,
    acks: st.acks,
    aiReplies: st.aiReplies,
    errors: st.errors,
    firstError: st.firstError,
    latency: st.hist.toJSON(),
    ackLatency: st.ackHist.toJSON(),
    loadgenLagP99Ms: Math.round(lag.percentile(99) / 1e4) / 100,
    loadgenLagMaxMs: Math.round(lag.max / 1e4) / 100,
    wallMs: Math.round(performance.now() - t0),
  };
}

/** How an HTTP answer ended: its status code, or the error's code ('neterr' when it has none); `body` only on failures. */
type Finish = (t: number, status: number | string, body?: string) => void;

/**
 * One HTTP request's undici dispatch handler: no response object or stream,
 * the status from onHeaders, every body chunk through onData (kept only for a
 * non-2xx answer, for the error detail) and onComplete once the whole body
 * (Content-Length or the last chunk) has arrived.
 */
class Answer implements Dispatcher.DispatchHandlers {
  private status = 0;
  private failed: Buffer[] | null = null;
  constructor(
    private readonly t: number,
    private readonly finish: Finish,
  ) {}
  onConnect(): void {}
  onHeaders(statusCode: number): boolean {
    this.status = statusCode;
    this.failed = statusCode >= 200 && statusCode < 300 ? null : [];
    return true;
  }
  onData(chunk: Buffer): boolean {
    this.failed?.push(chunk);
    return true;
  }
  onComplete(): void {
    this.finish(this.t, this.status, this.failed ? Buffer.concat(this.failed).toString('utf8') : undefined);
  }
  onError(err: Error): void {
    this.finish(this.t, (err as NodeJS.ErrnoException).code ?? 'neterr', err.message);
  }
}

/**
 * HTTP load (S3 sends, S4 pages) through an undici Pool: `maxSockets`
 * keep-alive connections, one request at a time on each (no pipelining),
 * requests beyond that queue in the pool, as they did in node:http's Agent.
 * undici's dispatch API costs the load generator less CPU per request than
 * http.request (no ClientRequest/IncomingMessage/stream per request): against
 * a stub server, ~10-30 % less user CPU at 2,000 requests/s; the kernel's
 * share (syscalls, TCP) stays.
 */
async function httpStep(cmd: HttpStepCmd): Promise<StepResult> {
  const total = Math.max(1, Math.floor((cmd.rate * cmd.durationMs) / 1000));
  const id = ++stepId;
  const url = new URL(cmd.baseUrl);
  // no header/body timeouts, as with node:http: the step's drain bounds a slow answer
  const pool = new Pool(url.origin, { connections: cmd.maxSockets, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });
  const auth = await Promise.all(cmd.users.map(async (u) => `Bearer ${await tokenFor(cmd.secret, u.user_id)}`));
  const headers = auth.map((a) => (cmd.mode === 'send' ? ['authorization', a, 'content-type', 'application/json'] : ['authorization', a]));
  const hist = new Histogram();
  const errors: Record<string, number> = {};
  let firstError: string | undefined;
  let ok = 0;
  let done = 0;
  let counting = true;
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const finish: Finish = (t, status, body) => {
    if (!counting) return; // an answer still out when the drain ended stays 'incomplete', not an error
    done++;
    if (typeof status === 'number' && status >= 200 && status < 300) {
      ok++;
      hist.add(nowUs() - t);
    } else {
      const k = String(status);
      errors[k] = (errors[k] ?? 0) + 1;
      firstError ??= `${k} ${body ?? ''}`.slice(0, 300);
    }
  };
  let rnd = 12345;
  const random = (): number => {
    rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
    return rnd / 0x7fffffff;
  };
  const t0 = performance.now();
  const sendSeconds = await schedule(cmd.rate, total, (i, t) => {
    const ui = i % cmd.users.length;
    const u = cmd.users[ui]!;
    const answer = new Answer(t, finish);
    if (cmd.mode === 'send') {
      const body = `{"group_id":"${u.group_id}","msg_content":"h${id}.${i}","client_msg_id":"${RUN}.h${id}.${i}"}`;
      pool.dispatch({ method: 'POST', path: '/api/message/send', headers: headers[ui]!, body }, answer);
    } else {
      // half newest page, half a random older page
      const max = u.maxSeq ?? 0;
      const before = random() < 0.5 || max < 100 ? '' : `&before_seq=${1 + Math.floor(random() * (max - 50)) + 50}`;
      const path = `/api/message/list?group_id=${encodeURIComponent(u.group_id)}&limit=50${before}`;
      pool.dispatch({ method: 'GET', path, headers: headers[ui]! }, answer);
    }
  });
  const drainEnd = performance.now() + cmd.drainMs;
  while (done < total && performance.now() < drainEnd) await sleep(5);
  lag.disable();
  counting = false;
  await pool.destroy();
  return {
    rate: cmd.rate,
    durationMs: cmd.durationMs,
    sent: total,
    achievedRate: Math.round(total / Math.max(0.001, sendSeconds)),
    expectedDeliveries: total,
    deliveries: ok,
    duplicates: 0,
    late: 0,
    incomplete: total - ok,
    acks: ok,
    aiReplies: 0,
    errors,
    firstError,
    latency: hist.toJSON(),
    ackLatency: new Histogram().toJSON(),
    loadgenLagP99Ms: Math.round(lag.percentile(99) / 1e4) / 100,
    loadgenLagMaxMs: Math.round(lag.max / 1e4) / 100,
    wallMs: Math.round(performance.now() - t0),
  };
}

// ---------------------------------------------------------------- IPC
async function handle(cmd: LoadgenCmd): Promise<unknown> {
  switch (cmd.cmd) {
    case 'connect':
      return connect(cmd);
    case 'wsStep':
      return wsStep(cmd);
    case 'httpStep':
      return httpStep(cmd);
    case 'close':
      return closeAll();
    case 'stats':
      return { connections: conns.size, rss: process.memoryUsage().rss };
  }
}

if (!process.send) {
  process.stderr.write('bench/loadgen must be started by bench/run.js (IPC channel)\n');
  process.exit(2);
}
process.on('message', (m: { id: number; cmd: LoadgenCmd }) => {
  handle(m.cmd).then(
    (result) => process.send!({ id: m.id, ok: true, result } satisfies LoadgenReply),
    (err: unknown) => process.send!({ id: m.id, ok: false, error: (err as Error).stack ?? String(err) } satisfies LoadgenReply),
  );
});
process.on('disconnect', () => process.exit(0));
// exit through process.exit so a --cpu-prof profile gets written
process.on('SIGTERM', () => process.exit(0));

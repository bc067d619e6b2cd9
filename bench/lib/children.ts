import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadgenCmd, LoadgenReply } from './protocol.js';

/** build/bench (this file is build/bench/lib/children.js at run time). */
export const BENCH_BUILD_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
/** build/ */
export const BUILD_DIR = join(BENCH_BUILD_DIR, '..');

const children = new Set<ChildProcess>();

/** Kill every child this harness started (by pid), e.g. on an error or Ctrl-C. */
export function killAllChildren(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
}

export function track(c: ChildProcess): ChildProcess {
  children.add(c);
  c.on('exit', () => children.delete(c));
  return c;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A server under test running as a separate process. */
export interface ServerProc {
  name: string;
  pid: number;
  port: number;
  baseUrl: string;
  proc: ChildProcess;
  stderrTail(): string;
  stop(): Promise<void>;
}

function tail(proc: ChildProcess): () => string {
  let buf = '';
  const keep = (d: Buffer): void => {
    buf = (buf + d.toString()).slice(-4000);
  };
  proc.stderr?.on('data', keep);
  proc.stdout?.on('data', keep);
  return () => buf;
}

async function stopProc(proc: ChildProcess, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Poll GET url until 200 or the deadline. */
export async function waitHttpOk(url: string, timeoutMs: number, proc?: ChildProcess): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    if (proc && (proc.exitCode !== null || proc.signalCode !== null)) throw new Error(`process exited (${proc.exitCode ?? proc.signalCode}) before ${url} answered`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms (${last})`);
}

/** Start the IM service (`node build/bin/main.js`) with the given env; resolves when /readyz answers 200. */
export async function startService(opts: {
  env: Record<string, string>;
  port: number;
  nodeArgs?: string[];
}): Promise<ServerProc> {
  const proc = track(
    spawn(process.execPath, [...(opts.nodeArgs ?? []), join(BUILD_DIR, 'bin', 'main.js')], {
      env: { ...process.env, ...opts.env, IM_HTTP_PORT: String(opts.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const stderrTail = tail(proc);
  const baseUrl = `http://127.0.0.1:${opts.port}`;
  try {
    await waitHttpOk(`${baseUrl}/readyz`, 60_000, proc);
  } catch (err) {
    await stopProc(proc, 2000);
    throw new Error(`service did not start: ${(err as Error).message}\n${stderrTail()}`);
  }
  return { name: 'service', pid: proc.pid!, port: opts.port, baseUrl, proc, stderrTail, stop: () => stopProc(proc, 20_000) };
}

/** Start a peer (build/bench/peers/<file>.js); resolves once it prints LISTENING <port>. */
export async function startPeer(name: string, file: string, nodeArgs: string[] = []): Promise<ServerProc> {
  const proc = track(
    spawn(process.execPath, [...nodeArgs, join(BENCH_BUILD_DIR, 'peers', file), '0'], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  const stderrTail = tail(proc);
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${name} did not start:\n${stderrTail()}`)), 20_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /LISTENING (\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${name} exited (${code}):\n${stderrTail()}`));
    });
  });
  return { name, pid: proc.pid!, port, baseUrl: `http://127.0.0.1:${port}`, proc, stderrTail, stop: () => stopProc(proc, 5000) };
}

/** A load-generator process, driven by request/reply over IPC. */
export class Loadgen {
  private readonly proc: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  /** Set by the harness: node flags for every load generator (e.g. --cpu-prof). */
  static extraExecArgv: string[] = [];

  constructor() {
    this.proc = track(
      fork(join(BENCH_BUILD_DIR, 'loadgen', 'loadgen.js'), [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        execArgv: ['--max-old-space-size=4096', ...Loadgen.extraExecArgv],
      }),
    );
    this.proc.on('message', (m: LoadgenReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`loadgen: ${m.error}`));
    });
    this.proc.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`loadgen exited (${code})`));
      this.pending.clear();
    });
    // a send after the child died surfaces as a rejected call, not an unhandled 'error' event
    this.proc.on('error', () => undefined);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  call<T>(cmd: LoadgenCmd, timeoutMs = 600_000): Promise<T> {
    if (!this.proc.connected) return Promise.reject(new Error('loadgen is not running'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`loadgen: ${cmd.cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      this.proc.send({ id, cmd });
    });
  }

  async stop(): Promise<void> {
    await this.call({ cmd: 'close' }, 30_000).catch(() => undefined);
    await stopProc(this.proc, 3000);
  }
}

import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';
import type { Counter, Gauge, Histogram } from 'prom-client';
import type { Logger } from '../../kernel/logger.js';
import type { ServerFrame, WsConnections } from './ws.public.js';

/** Sockets visited per slice of a liveness round (see WsHub.sweep). */
const SWEEP_SLICE = 64;

/** One open socket of one user. */
export interface WsConn {
  readonly id: number;
  readonly userId: string;
  readonly socket: WebSocket;
  /** Groups this socket is indexed under. */
  readonly groups: Set<string>;
  /** Membership changes seen while the user's groups were loading; null once loaded. */
  pendingOps: Array<{ op: 'add' | 'remove'; groupId: string }> | null;
  /** Answered the last server ping (or sent anything since). */
  alive: boolean;
  /** The net socket held corked until this tick ends, and the bytes written to it meanwhile (see WsHub.corkUntilTickEnd). */
  corked: Duplex | null;
  corkedBytes: number;
}

export interface WsMetrics {
  connections: Gauge;
  framesSent: Counter<'type'>;
  fanoutLatency: Histogram;
  slowDisconnects: Counter;
}

/**
 * The connection registry: sockets indexed by user and by group, so a fan-out
 * costs the number of sockets of the group's members, never the number of
 * connected users. Each outgoing frame is serialized once, then written to
 * every socket; a socket whose unsent output is over the limit is terminated
 * instead of written to (the write never waits, so one slow client delays no
 * one and its buffer stays bounded).
 */
export class WsHub implements WsConnections {
  private readonly byUser = new Map<string, Set<WsConn>>();
  private readonly byGroup = new Map<string, Set<WsConn>>();
  private nextId = 1;
  private total = 0;
  private sweeping: Promise<void> | null = null;
  /** Sockets corked during this tick (see corkUntilTickEnd). */
  private corked: WsConn[] = [];

  constructor(
    private readonly opts: { maxBufferedBytes: number },
    private readonly logger: Logger,
    private readonly metrics: WsMetrics | null,
  ) {}

  /** Registers a socket; its groups are indexed once `loaded` is called. */
  add(userId: string, socket: WebSocket): WsConn {
    const conn: WsConn = { id: this.nextId++, userId, socket, groups: new Set(), pendingOps: [], alive: true, corked: null, corkedBytes: 0 };
    let set = this.byUser.get(userId);
    if (!set) {
      set = new Set();
      this.byUser.set(userId, set);
    }
    set.add(conn);
    this.total++;
    this.metrics?.connections.inc();
    return conn;
  }

  /**
   * Indexes the socket under the user's groups (read from storage after `add`),
   * then replays membership changes that arrived meanwhile, in order, so a
   * removal published during the read is never undone by a stale read.
   */
  loaded(conn: WsConn, groupIds: readonly string[]): void {
    if (!this.isRegistered(conn) || conn.pendingOps === null) return;
    const ops = conn.pendingOps;
    conn.pendingOps = null;
    for (const g of groupIds) this.index(conn, g);
    for (const { op, groupId } of ops) {
      if (op === 'add') this.index(conn, groupId);
      else this.unindex(conn, groupId);
    }
  }

  remove(conn: WsConn): void {
    const set = this.byUser.get(conn.userId);
    if (!set?.delete(conn)) return;
    if (set.size === 0) this.byUser.delete(conn.userId);
    for (const g of conn.groups) this.unindex(conn, g);
    this.total--;
    this.metrics?.connections.dec();
  }

  /** The user joined the group: every socket of the user starts receiving its frames. */
  joinGroup(userId: string, groupId: string): void {
    for (const conn of this.byUser.get(userId) ?? []) {
      if (conn.pendingOps) conn.pendingOps.push({ op: 'add', groupId });
      else this.index(conn, groupId);
    }
  }

  /** The user left the group: its sockets stop receiving the group's frames. */
  leaveGroup(userId: string, groupId: string): void {
    for (const conn of this.byUser.get(userId) ?? []) {
      if (conn.pendingOps) conn.pendingOps.push({ op: 'remove', groupId });
      else this.unindex(conn, groupId);
    }
  }

  /**
   * Sends one frame to every socket indexed under the group. `createdAt` (a
   * message's created_at) feeds the fan-out latency histogram. Returns the
   * number of sockets written to.
   */
  fanout(groupId: string, frame: ServerFrame, createdAt?: string): number {
    const set = this.byGroup.get(groupId);
    if (!set || set.size === 0) return 0;
    const data = Buffer.from(JSON.stringify(frame));
    let sent = 0;
    // Copy: a terminated socket leaves the set during the loop.
    for (const conn of [...set]) if (this.write(conn, data)) sent++;
    if (this.metrics && sent > 0) {
      this.metrics.framesSent.inc({ type: frame.type }, sent);
      if (createdAt) {
        const t = Date.parse(createdAt);
        if (!Number.isNaN(t)) this.metrics.fanoutLatency.observe(Math.max(0, Date.now() - t) / 1000);
      }
    }
    return sent;
  }

  /** Sends one frame to one socket (ack, error, sync, pong). */
  sendTo(conn: WsConn, frame: ServerFrame): boolean {
    return this.sendSerialized(conn, frame.type, JSON.stringify(frame));
  }

  /** `sendTo` for a frame serialised already (`json` must be a ServerFrame of this type). */
  sendSerialized(conn: WsConn, type: ServerFrame['type'], json: string): boolean {
    const ok = this.write(conn, Buffer.from(json));
    if (ok) this.metrics?.framesSent.inc({ type });
    return ok;
  }

  /**
   * One liveness round: terminates sockets that did not answer the previous
   * ping, pings the others. A ping is a socket write: 10,000 of them in one go
   * stalled every send for ~200 ms (and the pongs then arrive as one burst).
   * So the round visits sockets in slices of SWEEP_SLICE, paced evenly over
   * `spreadMs`, yielding the event loop between slices. A round still running
   * when the next is due is not started twice.
   */
  sweep(spreadMs = 0): Promise<void> {
    this.sweeping ??= this.sweepRound(spreadMs).finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  private async sweepRound(spreadMs: number): Promise<void> {
    const conns = this.all();
    const pauseMs = spreadMs / Math.ceil(conns.length / SWEEP_SLICE);
    for (let i = 0; i < conns.length; i++) {
      if (i > 0 && i % SWEEP_SLICE === 0) {
        await new Promise<void>((r) => (pauseMs >= 1 ? setTimeout(r, pauseMs).unref() : setImmediate(r)));
      }
      const conn = conns[i]!;
      if (conn.socket.readyState !== WebSocket.OPEN) continue;
      if (!conn.alive) {
        this.logger.info({ user_id: conn.userId, conn: conn.id }, 'ws: no pong, terminating socket');
        this.terminate(conn);
        continue;
      }
      conn.alive = false;
      conn.socket.ping();
    }
  }

  /** Every registered socket (stop). */
  all(): WsConn[] {
    return [...this.byUser.values()].flatMap((s) => [...s]);
  }

  count(userId?: string): number {
    return userId === undefined ? this.total : (this.byUser.get(userId)?.size ?? 0);
  }

  groupSocketCount(groupId: string): number {
    return this.byGroup.get(groupId)?.size ?? 0;
  }

  terminate(conn: WsConn): void {
    this.remove(conn);
    conn.socket.terminate();
  }

  private write(conn: WsConn, data: Buffer): boolean {
    const socket = conn.socket;
    if (socket.readyState !== WebSocket.OPEN) return false;
    // what this tick holds back (corkUntilTickEnd) is not the client's backlog
    const backlog = socket.bufferedAmount - conn.corkedBytes;
    if (backlog > this.opts.maxBufferedBytes) {
      this.logger.warn(
        { user_id: conn.userId, conn: conn.id, buffered_bytes: backlog, limit: this.opts.maxBufferedBytes },
        'ws: client is not reading, output over the limit: terminating socket',
      );
      this.metrics?.slowDisconnects.inc();
      this.terminate(conn);
      return false;
    }
    this.corkUntilTickEnd(conn);
    socket.send(data, { binary: false });
    if (conn.corked) conn.corkedBytes = socket.bufferedAmount - backlog;
    return true;
  }

  /**
   * Holds the socket's writes until the current tick's work is done, so the
   * frames one tick writes to one socket (a group-commit batch's messages, a
   * sender's ack and its own copy of the message) leave in one `writev`
   * instead of one system call each. `ws` has no public cork; its net socket
   * is reached through `_socket` when present (ws 8), else nothing is held.
   */
  private corkUntilTickEnd(conn: WsConn): void {
    if (conn.corked) return;
    const raw = (conn.socket as unknown as { _socket?: Duplex })._socket;
    if (!raw) return;
    raw.cork();
    conn.corked = raw;
    this.corked.push(conn);
    if (this.corked.length === 1) process.nextTick(this.uncorkAll);
  }

  private readonly uncorkAll = (): void => {
    const list = this.corked;
    this.corked = [];
    for (const conn of list) {
      const raw = conn.corked!;
      conn.corked = null;
      conn.corkedBytes = 0;
      raw.uncork();
    }
  };

  private isRegistered(conn: WsConn): boolean {
    return this.byUser.get(conn.userId)?.has(conn) ?? false;
  }

  private index(conn: WsConn, groupId: string): void {
    conn.groups.add(groupId);
    let set = this.byGroup.get(groupId);
    if (!set) {
      set = new Set();
      this.byGroup.set(groupId, set);
    }
    set.add(conn);
  }

  private unindex(conn: WsConn, groupId: string): void {
    conn.groups.delete(groupId);
    const set = this.byGroup.get(groupId);
    if (!set) return;
    set.delete(conn);
    if (set.size === 0) this.byGroup.delete(groupId);
  }
}

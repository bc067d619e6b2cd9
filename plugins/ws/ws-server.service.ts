import type { IncomingMessage, OutgoingHttpHeaders, Server } from 'node:http';
import { Router } from '@koa/router';
import type Koa from 'koa';
import websockify from 'koa-websocket';
import type { WebSocket, WebSocketServer } from 'ws';
import type { MessageBus, Unsubscribe } from '../../kernel/bus.js';
import {
  AppError,
  ForbiddenError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
  toAppError,
} from '../../kernel/errors.js';
import type { Logger } from '../../kernel/logger.js';
import type { AuthService, ChatService, GroupService, Principal } from '../../kernel/ports/services.port.js';
import type { WsHub } from './ws-hub.service.js';
import { WsSession } from './ws-session.service.js';
import { wsUserIdSchema, type WsOptions } from './ws.schema.js';

export interface WsServerDeps {
  koaApp: Koa;
  httpServer: Server;
  bus: MessageBus;
  authService: AuthService;
  chatService: ChatService;
  groupService: GroupService;
  logger: Logger;
}

/** The outcome of the upgrade check, handed from verifyClient to the connection handler. */
type Admission = { principal: Principal; userId: string } | { closeCode: 4401 | 4403; reason: string };

const PATH = /^\/ws\/([^/]+)\/?$/;

/**
 * `GET /ws/{user_id}` (API.md §5) on the http plugin's server and port:
 * koa-websocket attaches a `ws` server to the registered Koa app and
 * http.Server; the upgrade is authenticated before it completes
 * (verifyClient), then each socket is registered in the hub and its frames
 * handled by a WsSession. Bus events are pushed to the sockets of the group.
 */
export class WsServer {
  private wss: WebSocketServer | null = null;
  private accepting = false;
  private stopping: Promise<void> | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribes: Unsubscribe[] = [];
  private readonly admissions = new WeakMap<IncomingMessage, Admission>();

  constructor(
    private readonly deps: WsServerDeps,
    private readonly opts: WsOptions,
    private readonly hub: WsHub,
  ) {}

  start(): void {
    const { bus } = this.deps;
    const hub = this.hub;
    this.unsubscribes.push(
      bus.subscribe('message.stored', ({ message }) => {
        hub.fanout(message.group_id, { type: 'message', data: message }, message.created_at);
      }),
      bus.subscribe('member.added', ({ member }) => {
        hub.joinGroup(member.user_id, member.group_id);
        hub.fanout(member.group_id, { type: 'member_joined', data: member });
      }),
      bus.subscribe('member.removed', ({ member }) => {
        // Sent before the removal from the index: the member concerned hears it too.
        hub.fanout(member.group_id, { type: 'member_left', data: member });
        hub.leaveGroup(member.user_id, member.group_id);
      }),
      bus.subscribe('group.notify', ({ group_id, frame }) => {
        hub.fanout(group_id, frame);
      }),
    );

    const app = websockify(this.deps.koaApp);
    const router = new Router();
    router.get('/ws/:user_id', (ctx) => {
      this.onConnection(ctx.websocket, ctx.req);
    });
    // koa-websocket's middleware type differs from the router's (TOOLCHAIN.md): same (ctx, next) shape at run time.
    app.ws.use(router.routes() as unknown as Parameters<typeof app.ws.use>[0]);
    // koa-websocket accepts upgrades on any path: anything the router did not take is closed (verifyClient already refuses them).
    app.ws.use((ctx) => {
      ctx.websocket.close(4404, 'unknown path');
    });
    app.ws.listen({
      server: this.deps.httpServer,
      perMessageDeflate: false,
      clientTracking: false,
      // Frames over maxFrameBytes get an error frame; a frame this large is refused by ws itself (close 1009).
      maxPayload: Math.max(this.opts.maxFrameBytes * 4, 1024 * 1024),
      verifyClient: (info, done) => {
        this.admit(info.req).then(
          () => done(true),
          (err: unknown) => {
            const e = toAppError(err);
            if (e.code === 'INTERNAL') this.deps.logger.error({ err }, 'ws: upgrade check failed');
            const headers: OutgoingHttpHeaders = { 'Content-Type': 'application/json' };
            if (e.code === 'UNAUTHENTICATED') headers['WWW-Authenticate'] = 'Bearer';
            done(false, e.status, JSON.stringify(e.toJSON()), headers);
          },
        );
      },
    });
    this.wss = app.ws.server ?? null;
    this.accepting = true;
    // a round's pings are spread over a tenth of the period (see WsHub.sweep)
    this.pingTimer = setInterval(() => void hub.sweep(this.opts.pingIntervalMs / 10), this.opts.pingIntervalMs);
    this.pingTimer.unref();
  }

  /** Stops accepting upgrades, closes every socket with 1001 (terminating laggards), detaches from the server. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.accepting = false;
    if (this.pingTimer) clearInterval(this.pingTimer);
    for (const u of this.unsubscribes.splice(0)) u();
    await Promise.all(this.hub.all().map((conn) => this.closeSocket(conn.socket)));
    const wss = this.wss;
    this.wss = null;
    if (wss) await new Promise<void>((resolve) => wss.close(() => resolve()));
  }

  private closeSocket(socket: WebSocket): Promise<void> {
    return new Promise<void>((resolve) => {
      if (socket.readyState === socket.CLOSED) return resolve();
      const timer = setTimeout(() => {
        socket.terminate();
        resolve();
      }, this.opts.closeTimeoutMs);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.close(1001, 'server shutting down');
    });
  }

  /** Authenticates an upgrade; throws the AppError that refuses it. */
  private async admit(req: IncomingMessage): Promise<void> {
    if (!this.accepting) throw new UnavailableError('server shutting down');
    const url = new URL(req.url ?? '/', 'http://localhost');
    const m = PATH.exec(url.pathname);
    let userId: string | undefined;
    try {
      userId = m ? decodeURIComponent(m[1]!) : undefined;
    } catch {
      userId = undefined;
    }
    if (userId === undefined || wsUserIdSchema.validate(userId).error) throw new NotFoundError(`no WebSocket endpoint at ${url.pathname}`);

    const header = req.headers.authorization;
    const bearer = header ? /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] : undefined;
    const token = url.searchParams.get('token') ?? bearer ?? '';
    try {
      const principal = await this.deps.authService.verify(token);
      if (principal.user_id !== userId) throw new ForbiddenError(`the token's sub is not '${userId}'`);
      this.admissions.set(req, { principal, userId });
    } catch (err) {
      const e = toAppError(err);
      if (this.opts.authFailure === 'close' && (e instanceof UnauthenticatedError || e instanceof ForbiddenError)) {
        this.admissions.set(req, { closeCode: e instanceof ForbiddenError ? 4403 : 4401, reason: e.message.slice(0, 120) });
        return;
      }
      throw e;
    }
  }

  private onConnection(socket: WebSocket, req: IncomingMessage): void {
    const admission = this.admissions.get(req);
    this.admissions.delete(req);
    if (!admission) {
      socket.close(4404, 'unknown path');
      return;
    }
    if ('closeCode' in admission) {
      socket.close(admission.closeCode, admission.reason);
      return;
    }
    if (!this.accepting) {
      socket.close(1001, 'server shutting down');
      return;
    }
    const { logger, chatService, groupService } = this.deps;
    const conn = this.hub.add(admission.userId, socket);
    const session = new WsSession(conn, admission.principal, { hub: this.hub, chatService, logger }, this.opts);
    // the socket's lines carry conn and user_id
    const log = session.logger;
    socket.on('message', (data, isBinary) => session.onFrame(data, isBinary));
    socket.on('pong', () => {
      conn.alive = true;
    });
    socket.on('close', () => this.hub.remove(conn));
    socket.on('error', (err) => log.debug({ err }, 'ws: socket error'));
    log.debug('ws: connected');
    groupService.groupIdsOf(admission.userId).then(
      (ids) => this.hub.loaded(conn, ids),
      (err: unknown) => {
        const e: AppError = toAppError(err);
        log.error({ err, code: e.code }, "ws: cannot load the user's groups: closing socket");
        this.hub.remove(conn);
        socket.close(1011, e.code === 'UNAVAILABLE' ? 'storage unavailable, retry later' : 'internal error');
      },
    );
  }
}

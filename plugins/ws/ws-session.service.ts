import type { RawData } from 'ws';
import { AppError, InvalidJsonError, PayloadTooLargeError, RateLimitedError, ValidationError, toAppError } from '../../kernel/errors.js';
import { ContextLogger, type LogContext, type Logger } from '../../kernel/logger.js';
import type { ChatService, Principal } from '../../kernel/ports/services.port.js';
import { validate } from '../../lib/validate.js';
import type { WsConn, WsHub } from './ws-hub.service.js';
import { frameEnvelopeSchema, pingFrameSchema, sendFrameSchema, syncFrameSchema, type WsOptions } from './ws.schema.js';

/**
 * Handles the client frames of one socket (API.md §5). `send` and `sync` run
 * one after the other in arrival order (so a client's sends are stored in the
 * order it sent them); `ping` is answered at once. A bad frame gets an error
 * frame and the socket stays open.
 */
export class WsSession {
  private chain: Promise<void> = Promise.resolve();
  private queued = 0;
  /** The socket's ids (conn, user_id): on its lines, and handed to the chat service with each send. */
  private readonly logContext: LogContext;
  /** The socket's logger: its lines carry conn and user_id (a child is made only when one is written). */
  readonly logger: Logger;

  constructor(
    private readonly conn: WsConn,
    private readonly principal: Principal,
    private readonly deps: { hub: WsHub; chatService: ChatService; logger: Logger },
    private readonly opts: Pick<WsOptions, 'maxFrameBytes' | 'maxQueuedFrames'>,
  ) {
    this.logContext = { conn: conn.id, user_id: conn.userId };
    this.logger = new ContextLogger(deps.logger, this.logContext);
  }

  onFrame(data: RawData, isBinary: boolean): void {
    this.conn.alive = true;
    const bytes = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
    let raw: unknown;
    try {
      if (isBinary) throw new ValidationError('frames must be text frames holding one JSON object', [{ path: 'frame', message: 'binary frame' }]);
      if (bytes > this.opts.maxFrameBytes) throw new PayloadTooLargeError(`frame larger than ${this.opts.maxFrameBytes} bytes`);
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const text = buf.toString('utf8');
      try {
        raw = JSON.parse(text);
      } catch {
        throw new InvalidJsonError('frame is not valid JSON');
      }
      const { type } = validate(frameEnvelopeSchema, raw, 'frame');
      if (type === 'ping') {
        validate(pingFrameSchema, raw, 'frame');
        this.deps.hub.sendTo(this.conn, { type: 'pong' });
        return;
      }
      if (this.queued >= this.opts.maxQueuedFrames) {
        throw new RateLimitedError(1, `more than ${this.opts.maxQueuedFrames} frames waiting on this socket`);
      }
      const frame = raw;
      this.queued++;
      this.chain = this.chain
        .then(() => (type === 'send' ? this.send(frame) : this.sync(frame)))
        .catch((err: unknown) => this.fail(err, frame))
        .finally(() => {
          this.queued--;
        });
    } catch (err) {
      this.fail(err, raw);
    }
  }

  private async send(raw: unknown): Promise<void> {
    const { type: _type, ...input } = validate(sendFrameSchema, raw, 'frame');
    const { message } = await this.deps.chatService.send(this.principal, input, { transport: 'ws', logContext: this.logContext });
    this.deps.hub.sendTo(this.conn, { type: 'ack', client_msg_id: input.client_msg_id, data: message });
  }

  private async sync(raw: unknown): Promise<void> {
    const f = validate(syncFrameSchema, raw, 'frame');
    const page = await this.deps.chatService.listSerialized(this.principal, {
      group_id: f.group_id,
      after_seq: f.after_seq,
      ...(f.limit === undefined ? {} : { limit: f.limit }),
    });
    // a reconnect storm is a storm of syncs: the page's JSON, as the storage wrote it, goes into the frame
    this.deps.hub.sendSerialized(
      this.conn,
      'sync',
      `{"type":"sync","group_id":${JSON.stringify(f.group_id)},"data":${page.messages_json},"has_more":${page.has_more}}`,
    );
  }

  private fail(err: unknown, raw: unknown): void {
    const e: AppError = toAppError(err);
    if (e.code === 'INTERNAL') this.logger.error({ err }, 'ws: frame failed');
    else this.logger.debug({ code: e.code }, 'ws: frame refused');
    const cmi = typeof raw === 'object' && raw !== null ? (raw as { client_msg_id?: unknown }).client_msg_id : undefined;
    this.deps.hub.sendTo(this.conn, {
      type: 'error',
      code: e.code,
      message: e.code === 'INTERNAL' ? 'internal error' : e.message,
      ...(typeof cmi === 'string' ? { client_msg_id: cmi } : {}),
      ...(e.details.length > 0 ? { details: e.details } : {}),
      ...(e instanceof RateLimitedError ? { retry_after_seconds: e.retryAfterSeconds } : {}),
    });
  }
}

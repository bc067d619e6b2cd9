import Joi from 'joi';
import { MSG_TYPES, type MsgType } from '../../kernel/domain.js';
import { idSchema } from '../../lib/ids.schema.js';

/** Options of the `ws` plugin (config section `ws`). */
export interface WsOptions {
  /** Server-initiated WebSocket ping period; a socket that has not answered the previous ping is terminated. */
  pingIntervalMs: number;
  /**
   * Back-pressure limit: when a socket's unsent output (bufferedAmount) is over
   * this many bytes at the next write, the socket is terminated (the client
   * reconnects and syncs). Memory per slow client stays below this plus one frame.
   */
  maxBufferedBytes: number;
  /** Largest client frame handled; bigger ones get an error frame (PAYLOAD_TOO_LARGE). */
  maxFrameBytes: number;
  /** Client frames waiting to be handled per socket; beyond it a frame gets an error frame (RATE_LIMITED). */
  maxQueuedFrames: number;
  /** On stop: how long to wait for clients to complete the close handshake before terminating them. */
  closeTimeoutMs: number;
  /**
   * How an upgrade that fails authentication is refused: 'status' = HTTP 401/403
   * before the upgrade; 'close' = upgrade, then close at once with 4401/4403
   * (browsers cannot read an HTTP status of a refused upgrade, but see close codes).
   */
  authFailure: 'status' | 'close';
}

export const wsOptionsSchema = Joi.object<WsOptions>({
  pingIntervalMs: Joi.number().integer().min(20).max(3_600_000).default(30_000),
  maxBufferedBytes: Joi.number().integer().min(1024).default(4 * 1024 * 1024),
  maxFrameBytes: Joi.number().integer().min(256).max(16 * 1024 * 1024).default(64 * 1024),
  maxQueuedFrames: Joi.number().integer().min(1).max(10_000).default(64),
  closeTimeoutMs: Joi.number().integer().min(0).max(60_000).default(2_000),
  authFailure: Joi.string().valid('status', 'close').default('status'),
});

/** Client frame types (API.md §5). */
export const CLIENT_FRAME_TYPES = ['send', 'sync', 'ping'] as const;
export type ClientFrameType = (typeof CLIENT_FRAME_TYPES)[number];

/** First pass: the frame is an object with a known `type` (its other fields are checked by the type's schema). */
export const frameEnvelopeSchema = Joi.object<{ type: ClientFrameType }>({
  type: Joi.string()
    .valid(...CLIENT_FRAME_TYPES)
    .required(),
})
  .unknown(true)
  .required();

export interface SendFrame {
  type: 'send';
  group_id: string;
  msg_type?: MsgType;
  msg_content: string;
  client_msg_id: string;
}

/**
 * The send frame's shape. Content rules (blank, length, AI_REPLY refused) are
 * the chat service's, so a WS send gets exactly the errors of the HTTP send.
 */
export const sendFrameSchema = Joi.object<SendFrame>({
  type: Joi.string().valid('send').required(),
  group_id: idSchema.required(),
  msg_type: Joi.string().valid(...MSG_TYPES),
  msg_content: Joi.string().allow('').required(),
  client_msg_id: Joi.string().min(1).max(128).required(),
});

export interface SyncFrame {
  type: 'sync';
  group_id: string;
  after_seq: number;
  limit?: number;
}

export const syncFrameSchema = Joi.object<SyncFrame>({
  type: Joi.string().valid('sync').required(),
  group_id: idSchema.required(),
  after_seq: Joi.number().integer().min(0).required(),
  limit: Joi.number().integer().min(1).max(200),
});

export const pingFrameSchema = Joi.object<{ type: 'ping' }>({
  type: Joi.string().valid('ping').required(),
});

/** Path parameter of `GET /ws/{user_id}`. */
export const wsUserIdSchema = idSchema.required();

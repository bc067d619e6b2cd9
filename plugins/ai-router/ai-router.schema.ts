import Joi from 'joi';
import { idSchema } from '../../lib/ids.schema.js';
import type { AiRecordStatus } from '../../kernel/domain.js';

/**
 * What this instance does in the AI layer: `all` (default) creates the records of the
 * messages it stored and works due records; `intake` only creates them (and publishes
 * `ai.record.created` so workers claim at once); `worker` only claims and works due
 * records, whichever instance created them.
 */
export type AiRouterRole = 'all' | 'intake' | 'worker';
export const AI_ROUTER_ROLES: readonly AiRouterRole[] = ['all', 'intake', 'worker'];

/** The `ai-router` config section: role, routing, retries, breaker, workers, recovery. */
export interface AiRouterOptions {
  /** all | intake | worker (see AiRouterRole). */
  role: AiRouterRole;
  /** Roles (in the group) whose messages are forwarded. AI_ASSISTANT senders are never forwarded. */
  forwardRoles: Array<'PATIENT' | 'DOCTOR'>;
  /** The group must contain an AI_ASSISTANT member (the reply's sender); without one the message is not forwarded. */
  requireAssistant: boolean;
  /** After a DOCTOR speaks in a group, skip forwarding there for this long and push ai_status 'paused' (0 = off). */
  doctorPauseMs: number;
  /** How many of the group's last messages are sent as history (the message itself included). */
  historySize: number;
  /** Time limit of one attempt (ms). */
  attemptTimeoutMs: number;
  /** Attempts per record, the first included; then the record fails (status 2). */
  maxAttempts: number;
  backoff: {
    /** Delay before the 2nd attempt; doubles (factor) for each further one. */
    baseMs: number;
    factor: number;
    maxMs: number;
    /** 0..1: the delay is reduced by a random share up to this much. */
    jitter: number;
  };
  /** Longest Retry-After honoured (ms); longer ones are capped. */
  maxRetryAfterMs: number;
  /** Concurrent AI calls (and records worked) per instance. */
  concurrency: number;
  /** How long a claim on a record holds (must exceed attemptTimeoutMs). */
  leaseMs: number;
  /** How often due records are claimed (new records are worked at once anyway). */
  pollIntervalMs: number;
  breaker: {
    /** Consecutive failed attempts (network, timeout, 408/429/5xx) that open the breaker. */
    failureThreshold: number;
    /** How long it stays open before one trial call is let through. */
    resetMs: number;
  };
  recovery: {
    /** Start-up scan of messages stored within this window that have no record (0 = off). */
    windowMs: number;
    /** Most messages examined by one scan. */
    maxMessages: number;
    batchSize: number;
  };
  /** Most message.stored events being recorded at once; beyond it the next poll rescans instead (bounded memory). */
  maxIntakeInFlight: number;
  /**
   * Adaptive limit on the AI work, driven by this process's event-loop delay, so that an
   * overloaded AI layer delays forwarding instead of the sends it shares the event loop with.
   */
  loadShedding: {
    /**
     * Every intervalMs the p99 event-loop delay of the interval is compared with this (ms):
     * above it, the records worked at once are halved (down to 1); at or below it, they are
     * raised by 5 % of `concurrency` (at least 1), up to `concurrency`. While the limit is
     * below `concurrency`, at most that many message.stored events are recorded at once
     * too; the others are left to the rescan of the next poll. 0 = off.
     */
    maxEventLoopDelayMs: number;
    /**
     * The same cut when the users' sends got slow: the p99 of sends completed in the
     * last half-second (AI replies excluded; chatService.recentSendP99Ms) above this (ms).
     * It sees what the event-loop delay misses (sends queued for the database). 0 = off.
     */
    maxSendP99Ms: number;
    /** How often the delay is read and the limit adjusted (ms). */
    intervalMs: number;
  };
  /** How long a group's members (and their users) are remembered; member.added/removed from any instance end it at once (0 = read every time). */
  membersCacheMs: number;
  /** Most groups whose members are remembered. */
  membersCacheSize: number;
  /**
   * Ends a reply cut to fit chat.maxContentLength (the full reply stays in the
   * record's response_content). Not blank; shorter than chat.maxContentLength.
   */
  replyTruncationMarker: string;
}

export const aiRouterOptionsSchema = Joi.object<AiRouterOptions>({
  role: Joi.string()
    .valid(...AI_ROUTER_ROLES)
    .default('all')
    .messages({ 'any.only': 'must be one of all, intake, worker', 'string.base': 'must be one of all, intake, worker' }),
  forwardRoles: Joi.array().items(Joi.string().valid('PATIENT', 'DOCTOR')).unique().default(['PATIENT']),
  requireAssistant: Joi.boolean().default(true),
  doctorPauseMs: Joi.number().integer().min(0).default(0),
  historySize: Joi.number().integer().min(1).max(200).default(20),
  attemptTimeoutMs: Joi.number().integer().min(50).default(30_000),
  maxAttempts: Joi.number().integer().min(1).max(50).default(4),
  backoff: Joi.object({
    baseMs: Joi.number().integer().min(0).default(1000),
    factor: Joi.number().min(1).max(10).default(2),
    maxMs: Joi.number().integer().min(0).default(60_000),
    jitter: Joi.number().min(0).max(1).default(0.5),
  }).default(),
  maxRetryAfterMs: Joi.number().integer().min(0).default(300_000),
  concurrency: Joi.number().integer().min(1).max(1000).default(8),
  leaseMs: Joi.number().integer().min(100).default(120_000).greater(Joi.ref('attemptTimeoutMs')),
  pollIntervalMs: Joi.number().integer().min(20).default(2000),
  breaker: Joi.object({
    failureThreshold: Joi.number().integer().min(1).default(5),
    resetMs: Joi.number().integer().min(10).default(30_000),
  }).default(),
  recovery: Joi.object({
    windowMs: Joi.number().integer().min(0).default(15 * 60_000),
    maxMessages: Joi.number().integer().min(1).default(50_000),
    batchSize: Joi.number().integer().min(1).max(10_000).default(500),
  }).default(),
  maxIntakeInFlight: Joi.number().integer().min(1).default(1000),
  loadShedding: Joi.object({
    maxEventLoopDelayMs: Joi.number().integer().min(0).max(10_000).default(50),
    maxSendP99Ms: Joi.number().integer().min(0).max(60_000).default(20),
    intervalMs: Joi.number().integer().min(50).max(60_000).default(500),
  }).default(),
  membersCacheMs: Joi.number().integer().min(0).max(600_000).default(30_000),
  membersCacheSize: Joi.number().integer().min(1).max(10_000_000).default(10_000),
  replyTruncationMarker: Joi.string().max(200).pattern(/\S/).message('{{#label}} must not be blank').default('…'),
});

/** Payload of the bus event 'ai.record.created' (checked when it comes from another instance). */
export const recordCreatedEventSchema = Joi.object({
  record_id: Joi.string().min(1).max(128).required(),
  group_id: idSchema.required(),
}).unknown(true);

export interface InteractionsQuery {
  group_id?: string;
  status?: AiRecordStatus;
  limit: number;
}

/** Query of GET /api/ai/interactions. */
export const interactionsQuerySchema = Joi.object<InteractionsQuery>({
  group_id: idSchema,
  status: Joi.number().integer().valid(0, 1, 2),
  limit: Joi.number().integer().min(1).max(200).default(50),
});

/** Response of POST /api/ai/test. */
export const aiTestResponseSchema = Joi.object({
  ok: Joi.boolean().required(),
  duration_ms: Joi.number().integer().min(0).required(),
  error: Joi.string(),
});

export const aiRecordSchema = Joi.object({
  record_id: Joi.string(),
  group_id: Joi.string(),
  user_message_id: Joi.string(),
  ai_message_id: Joi.string().allow(null),
  ai_service_url: Joi.string().allow(''),
  request_content: Joi.string().allow(null).description('JSON of the last request sent'),
  response_content: Joi.string().allow(null).description('JSON of the last answer received'),
  status: Joi.number().valid(0, 1, 2).description('0 pending, 1 succeeded, 2 failed'),
  duration_ms: Joi.number().allow(null),
  error_message: Joi.string()
    .allow(null)
    .description('why the record failed; on a succeeded record, a note: the reply was not posted, or was posted truncated to chat.maxContentLength'),
  attempts: Joi.number().integer(),
  next_attempt_at: Joi.string().allow(null),
  created_at: Joi.string(),
  updated_at: Joi.string(),
});

export const interactionsResponseSchema = Joi.object({ records: Joi.array().items(aiRecordSchema) });

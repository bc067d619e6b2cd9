import pLimit, { type LimitFunction } from 'p-limit';
import type { Counter, Gauge, Histogram } from 'prom-client';
import type { EventMeta, MessageBus, Unsubscribe } from '../../kernel/bus.js';
import type { Clock, IdGenerator } from '../../kernel/clock.js';
import { AI_STATUS, type AiInteractionRecord, type Member, type Message, type User } from '../../kernel/domain.js';
import { AppError, ForbiddenError, NotFoundError } from '../../kernel/errors.js';
import { withContext, type LogContext, type Logger } from '../../kernel/logger.js';
import { AiCallError, type AiCallInput, type AiCallResult, type AiProvider } from '../../kernel/ports/ai-provider.port.js';
import { AI_TRANSPORT, type ChatService, type Principal } from '../../kernel/ports/services.port.js';
import type { AiRecordPatch, Repositories, Storage } from '../../kernel/ports/storage.port.js';
import { validate } from '../../lib/validate.js';
import type { AiStatusFrame } from './ai-router.public.js';
import { interactionsQuerySchema, recordCreatedEventSchema, type AiRouterOptions } from './ai-router.schema.js';
import { CircuitBreaker, retryDelayMs } from './circuit-breaker.js';
import { HistoryCache, MembersCache, groupMembers, type GroupMembers } from './group-cache.js';
import { AdaptiveLimit, eventLoopDelaySampler, type EventLoopDelaySampler } from './load-shedding.js';
import { fitReply } from './reply-fit.js';

export interface AiRouterDeps {
  storage: Storage;
  chatService: ChatService;
  bus: MessageBus;
  clock: Clock;
  ids: IdGenerator;
  instanceId: string;
  logger: Logger;
  /** The chat's chat.maxContentLength: a longer reply is cut to fit (replyTruncationMarker). */
  maxContentLength: number;
  /** Null when no 'ai-provider' adapter is enabled: the router stays idle. */
  provider: AiProvider | null;
  metrics?: {
    calls: Counter<'outcome'>;
    latency: Histogram<'outcome'>;
    /** The records worked at once that load shedding allows now. */
    concurrencyLimit: Gauge;
    /** The event-loop delay last measured by load shedding (seconds). */
    eventLoopDelay: Gauge;
    /** message.stored events left to the rescan instead of being recorded at once. */
    intakeDeferred: Counter;
    /** Replies posted cut to fit chat.maxContentLength. */
    repliesTruncated: Counter;
    /** Interaction records created by this instance's intake (live or by a scan). */
    recordsCreated?: Counter;
  };
  /** Where load shedding reads the event-loop delay (default: this process, eventLoopDelaySampler). */
  eventLoopDelay?: EventLoopDelaySampler;
  /** Where load shedding reads the users' send p99 (ms; default: chatService.recentSendP99Ms). */
  sendP99Ms?: () => number;
}

/** Load shedding as the router sees it now (see `AiRouter.load`). */
export interface AiLoadState {
  /** Records worked at once allowed now (`concurrency` when not shedding). */
  limit: number;
  concurrency: number;
  /** The event-loop delay of the last interval (ms); null before the first one or when load shedding is off. */
  eventLoopDelayMs: number | null;
  /** The users' send p99 read at the last interval (ms); null before the first one or when that check is off. */
  sendP99Ms: number | null;
  /** True while the limit is below `concurrency`. */
  shedding: boolean;
  /** message.stored events left to the rescan instead of being recorded at once, since start. */
  intakeDeferred: number;
}

/** Why a stored message is, or is not, forwarded. */
export type RoutingDecision =
  | { forward: true; assistant: Member | null }
  | { forward: false; reason: 'ai-reply' | 'not-member' | 'assistant-sender' | 'role' | 'no-assistant' | 'paused' };

/** A record as the API shows it (the lease is internal). */
export type PublicAiRecord = Omit<AiInteractionRecord, 'lease_owner' | 'lease_until'>;

export interface AiTestResult {
  ok: boolean;
  duration_ms: number;
  error?: string;
}

const json = (v: unknown): string | null => (v === undefined ? null : JSON.stringify(v));

/** How far back (messages) the doctor-pause rule looks. */
const PAUSE_LOOKBACK = 50;
/** Messages kept per group in the history cache beyond what one attempt needs (newer ones arriving meanwhile). */
const HISTORY_SLACK = 32;
/** Bounds of the history cache (all groups together). */
const HISTORY_MAX_MESSAGES = 100_000;
const HISTORY_MAX_CHARS = 16_000_000;
/** Most records one claim takes (see pump). */
const CLAIM_BATCH = 32;

function publicRecord(r: AiInteractionRecord): PublicAiRecord {
  const { lease_owner: _o, lease_until: _u, ...rest } = r;
  return rest;
}

/**
 * The AI layer (API.md §6). Reacts to 'message.stored' (local origin only),
 * decides by the routing rules, writes a pending interaction record (the
 * durable to-do list), and works records claimed with a lease: one attempt per
 * claim, retries persisted on the record (attempts, next_attempt_at), a cap on
 * concurrent calls and a circuit breaker. Replies go through chatService.send
 * with client_msg_id `ai:<record_id>`, so a retried post never makes a second
 * reply. Nothing here is awaited by a send.
 *
 * `options.role` splits the two halves between processes: `intake` creates
 * records (rules, doctor pause, recovery scan) and publishes 'ai.record.created'
 * instead of working them; `worker` creates none and claims due records of any
 * instance, at once on 'ai.record.created' and at every poll.
 */
export class AiRouter {
  private readonly breaker: CircuitBreaker;
  private readonly limit: LimitFunction;
  /** The router's own storage work (records, reads, scans): on the background lane, never ahead of sends. */
  private readonly store: Repositories;
  /** How many records are worked at once now: `concurrency`, cut while the event loop is delayed or sends are slow. */
  private readonly adaptive: AdaptiveLimit;
  /** The users' send p99 (ms) load shedding reads. */
  private readonly sendP99Ms: () => number;
  private sampler: EventLoopDelaySampler | null = null;
  private loadTimer: NodeJS.Timeout | null = null;
  private lastDelayMs: number | null = null;
  private lastSendP99Ms: number | null = null;
  /** The current shedding episode (limit below concurrency): when it began and the lowest limit. */
  private episode: { since: number; lowest: number; deferred: number } | null = null;
  private intakeDeferred = 0;
  /** record_id -> abort controller of the attempt in flight. */
  private readonly inflight = new Map<string, AbortController>();
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly unsubscribes: Unsubscribe[] = [];
  private readonly members: MembersCache;
  private readonly history: HistoryCache;
  /** Lease owners are `<instanceId>#<nonce>.<claim number>`: a claim never returns the records of an earlier one. */
  private readonly leasePrefix: string;
  private claims = 0;
  /** Records whose attempt ended while a claim was running (their claimed copy may be stale). */
  private finishedDuringClaim: Set<string> | null = null;
  /** Records in flight that a later claim took again: their lease is released when the attempt is done. */
  private readonly releaseWhenDone = new Set<string>();
  /** An attempt that starts later than this after its claim re-reads its record first (the lease may have run out). */
  private readonly rereadAfterMs: number;
  private pollTimer: NodeJS.Timeout | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private wakeAt = 0;
  private pumping = false;
  private pumpAgain = false;
  private intakeInFlight = 0;
  /** Set when intake dropped events (overload): the next poll rescans from this time. */
  private rescanSince: string | null = null;
  /** A rescan is running (one at a time: it is the sequential intake of overload). */
  private rescanning = false;
  private running = false;
  private stopping = false;
  /** Resolves when the start-up recovery scan has finished. */
  recovery: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: AiRouterDeps,
    readonly options: AiRouterOptions,
  ) {
    this.limit = pLimit(options.concurrency);
    this.store = deps.storage.background;
    this.adaptive = new AdaptiveLimit(options.concurrency);
    this.sendP99Ms = deps.sendP99Ms ?? (() => deps.chatService.recentSendP99Ms());
    this.members = new MembersCache(this.store, () => deps.clock.now().getTime(), options.membersCacheMs, options.membersCacheSize);
    const keep = Math.max(options.historySize, options.doctorPauseMs > 0 ? PAUSE_LOOKBACK + 1 : 0) + HISTORY_SLACK;
    this.history = new HistoryCache(this.store, keep, HISTORY_MAX_MESSAGES, HISTORY_MAX_CHARS);
    this.leasePrefix = `${deps.instanceId}#${Math.random().toString(36).slice(2, 8)}.`;
    this.rereadAfterMs = (options.leaseMs - options.attemptTimeoutMs) / 2;
    this.breaker = new CircuitBreaker(options.breaker, () => deps.clock.now().getTime(), (state) => {
      deps.logger.warn({ breaker: state }, `AI circuit breaker ${state}`);
      if (state !== 'open') this.kick();
      else this.scheduleWake(this.breaker.retryAt);
    });
  }

  /**
   * True when a provider with a URL is present: only then are messages forwarded. An
   * `intake` instance makes no call: it needs no provider and is always active.
   */
  get active(): boolean {
    return this.options.role === 'intake' || this.deps.provider?.configured === true;
  }

  /** This instance creates records for the messages it stores (roles all and intake). */
  private get intakes(): boolean {
    return this.options.role !== 'worker';
  }

  /** This instance claims and works due records (roles all and worker). */
  private get works(): boolean {
    return this.options.role !== 'intake';
  }

  get breakerState(): string {
    return this.breaker.state;
  }

  /** Load shedding now: the limit, the last measured delay, the events left to the rescan. */
  get load(): AiLoadState {
    return {
      limit: this.adaptive.value,
      concurrency: this.options.concurrency,
      eventLoopDelayMs: this.lastDelayMs,
      sendP99Ms: this.lastSendP99Ms,
      shedding: this.adaptive.value < this.options.concurrency,
      intakeDeferred: this.intakeDeferred,
    };
  }

  start(): void {
    if (!this.active || this.running) {
      // A worker only calls the AI service: without one it would be a process that does nothing.
      // Checked here, not in options(): deployment recipes leave ai.url to IM_AI_URL.
      if (!this.active && this.options.role === 'worker') {
        throw new Error('ai-router.role is worker but no AI service is configured: set ai.url (IM_AI_URL) and an ai-provider adapter');
      }
      if (!this.active) this.deps.logger.info('AI service not configured (set IM_AI_URL): the AI router stays idle');
      return;
    }
    this.running = true;
    const { bus } = this.deps;
    this.unsubscribes.push(
      // Intake (local messages), and the history cache (messages of every instance).
      bus.subscribe('message.stored', (p, meta) => this.onStored(p.message, meta)),
      // Membership changes from any instance end the cached member list of the group at once.
      bus.subscribe('member.added', ({ member }) => this.members.invalidate(member.group_id)),
      bus.subscribe('member.removed', ({ member }) => this.members.invalidate(member.group_id)),
    );
    // A record created by an intake instance: claim now rather than at the next poll.
    if (this.works) this.unsubscribes.push(bus.subscribe('ai.record.created', (p, meta) => this.onRecordCreated(p, meta)));
    this.pollTimer = setInterval(() => this.onPoll(), this.options.pollIntervalMs);
    this.pollTimer.unref();
    this.deps.metrics?.concurrencyLimit.set(this.adaptive.value);
    const { maxEventLoopDelayMs, maxSendP99Ms } = this.options.loadShedding;
    if (maxEventLoopDelayMs > 0 || maxSendP99Ms > 0) {
      if (maxEventLoopDelayMs > 0) this.sampler = this.deps.eventLoopDelay ?? eventLoopDelaySampler();
      this.loadTimer = setInterval(() => this.evaluateLoad(), this.options.loadShedding.intervalMs);
      this.loadTimer.unref();
    }
    // The recovery scan is intake's (the instances that store messages); a worker creates no record.
    const windowMs = this.intakes ? this.options.recovery.windowMs : 0;
    this.recovery =
      windowMs > 0
        ? this.track(
            this.recover(new Date(this.deps.clock.now().getTime() - windowMs).toISOString()).catch((err: unknown) =>
              this.deps.logger.error({ err }, 'AI recovery scan failed'),
            ),
          ).then(() => undefined)
        : Promise.resolve();
    this.kick();
    this.deps.logger.info({ role: this.options.role, provider: this.deps.provider?.name, url: this.deps.provider?.url }, 'AI router started');
  }

  /** Stops intake and polling, aborts calls in flight (their records stay pending) and waits for the work to settle. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const u of this.unsubscribes.splice(0)) u();
    this.members.clear();
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    if (this.loadTimer) clearInterval(this.loadTimer);
    this.pollTimer = null;
    this.wakeTimer = null;
    this.loadTimer = null;
    // Only the sampler made here is closed; an injected one belongs to whoever made it.
    if (this.sampler && this.sampler !== this.deps.eventLoopDelay) this.sampler.close?.();
    this.sampler = null;
    for (const c of this.inflight.values()) c.abort(new Error('AI router stopping'));
    while (this.tasks.size > 0) await Promise.allSettled([...this.tasks]);
    this.running = false;
  }

  // ---------------------------------------------------------------- intake

  private onStored(message: Message, meta: EventMeta): void {
    if (this.stopping) return;
    this.history.add(message);
    if (meta.origin !== 'local' || message.msg_type === 'AI_REPLY' || !this.intakes) return;
    if (this.intakeInFlight >= this.intakeLimit()) {
      // Overloaded: leave it to the rescan of the next poll (the message is stored; nothing is lost).
      this.intakeDeferred++;
      if (this.episode) this.episode.deferred++;
      this.deps.metrics?.intakeDeferred.inc();
      this.rescanFrom(message.created_at);
      return;
    }
    this.intakeInFlight++;
    this.track(
      this.intake(message, true, meta.logContext)
        .catch((err: unknown) => {
          withContext(this.deps.logger, meta.logContext).error({ err, message_id: message.message_id }, 'AI intake failed: left to the recovery scan');
          this.rescanFrom(message.created_at);
        })
        .finally(() => {
          this.intakeInFlight--;
        }),
    );
  }

  /**
   * message.stored events recorded at once: maxIntakeInFlight; while load shedding has cut the
   * limit, no more than the limit (record inserts share the event loop with the sends). The rest
   * goes to the rescan, which records one message at a time.
   */
  private intakeLimit(): number {
    const limit = this.adaptive.value;
    return limit < this.options.concurrency ? Math.min(limit, this.options.maxIntakeInFlight) : this.options.maxIntakeInFlight;
  }

  /** The next poll rescans from `createdAt` (the earliest such time wins). */
  private rescanFrom(createdAt: string): void {
    if (this.rescanSince === null || createdAt < this.rescanSince) this.rescanSince = createdAt;
  }

  /**
   * Decides and, when forwarded, creates the pending record. True when a record was created.
   * `logContext`: the ids of the request or socket that stored the message (live intake).
   */
  private async intake(message: Message, live: boolean, logContext?: LogContext): Promise<boolean> {
    const decision = await this.decide(message);
    if (!decision.forward) {
      if (decision.reason === 'paused' && live) this.notify(message.group_id, message.message_id, 'paused');
      return false;
    }
    const { created, record } = await this.store.aiRecords.createIfAbsent({
      record_id: this.deps.ids.next(),
      group_id: message.group_id,
      user_message_id: message.message_id,
      ai_service_url: this.deps.provider?.url ?? '',
      created_at: this.deps.clock.nowIso(),
    });
    if (created) {
      this.deps.metrics?.recordsCreated?.inc();
      withContext(this.deps.logger, logContext).debug({ record_id: record.record_id, message_id: message.message_id }, 'AI record created');
      if (this.works) {
        this.history.track(message); // the attempt finds the message (and the group's history) here
        this.kick();
      } else {
        // Worked elsewhere: wake the workers (any instance, through the cluster bus).
        this.deps.bus.publish('ai.record.created', { record_id: record.record_id, group_id: record.group_id }, { logContext });
      }
    }
    return created;
  }

  /** The routing rules of API.md §6 with this router's settings. */
  async decide(message: Message): Promise<RoutingDecision> {
    if (message.msg_type === 'AI_REPLY') return { forward: false, reason: 'ai-reply' };
    const members = await this.groupMembers(message.group_id);
    const sender = members.byId.get(message.from_user_id);
    if (!sender) return { forward: false, reason: 'not-member' };
    if (sender.user_role === 'AI_ASSISTANT') return { forward: false, reason: 'assistant-sender' };
    if (!(this.options.forwardRoles as string[]).includes(sender.user_role)) return { forward: false, reason: 'role' };
    const assistant = members.assistant;
    if (!assistant && this.options.requireAssistant) return { forward: false, reason: 'no-assistant' };
    if (this.options.doctorPauseMs > 0 && (await this.doctorSpokeRecently(message, members))) return { forward: false, reason: 'paused' };
    return { forward: true, assistant };
  }

  /** The group's members: cached while the router hears the membership events, else read. */
  private async groupMembers(groupId: string): Promise<GroupMembers> {
    if (this.unsubscribes.length > 0) return this.members.get(groupId);
    return groupMembers(await this.store.members.list(groupId));
  }

  /** A DOCTOR member wrote in the group within doctorPauseMs before this message (looking back at most PAUSE_LOOKBACK messages). */
  private async doctorSpokeRecently(message: Message, members: GroupMembers): Promise<boolean> {
    let doctors: Set<string> | null = null;
    for (const m of members.list) if (m.user_role === 'DOCTOR') (doctors ??= new Set()).add(m.user_id);
    if (doctors === null) return false;
    const cutoff = new Date(Date.parse(message.created_at) - this.options.doctorPauseMs).toISOString();
    // From the history cache while it holds every message looked at; else from storage.
    const floor = Math.max(1, message.seq - PAUSE_LOOKBACK);
    for (let seq = message.seq - 1; seq >= floor; seq--) {
      const m = this.history.at(message.group_id, seq);
      if (!m) {
        const page = await this.store.messages.list(message.group_id, { before_seq: message.seq, limit: PAUSE_LOOKBACK });
        this.history.remember(message.group_id, page.messages);
        for (let i = page.messages.length - 1; i >= 0; i--) {
          const p = page.messages[i]!;
          if (p.created_at < cutoff) return false;
          if (doctors.has(p.from_user_id)) return true;
        }
        return false;
      }
      if (m.created_at < cutoff) return false;
      if (doctors.has(m.from_user_id)) return true;
    }
    return false;
  }

  /**
   * Crash recovery: messages stored since `since` that are forwarded by the
   * rules but have no record (a crash between the commit and the record) get one,
   * one message at a time. Examines at most recovery.maxMessages (always past
   * `since`); `resumeFrom` is where the messages not examined yet begin, null when
   * the scan reached the newest message.
   */
  async recover(since: string): Promise<{ created: number; resumeFrom: string | null }> {
    const { batchSize, maxMessages } = this.options.recovery;
    let examined = 0;
    let createdCount = 0;
    let cursor = since;
    let seenAtCursor = new Set<string>();
    let complete = false;
    while ((examined < maxMessages || cursor === since) && !this.stopping) {
      const limit = batchSize + seenAtCursor.size;
      const batch = await this.store.messages.listRecent(cursor, limit);
      const fresh = batch.filter((m) => !(m.created_at === cursor && seenAtCursor.has(m.message_id)));
      if (fresh.length === 0) {
        complete = true;
        break;
      }
      for (const m of fresh) {
        examined++;
        if (m.msg_type === 'AI_REPLY') continue;
        if (await this.intake(m, false)) createdCount++;
      }
      const last = fresh[fresh.length - 1]!;
      if (last.created_at !== cursor) {
        cursor = last.created_at;
        seenAtCursor = new Set();
      }
      for (const m of fresh) if (m.created_at === cursor) seenAtCursor.add(m.message_id);
      if (batch.length < limit) {
        complete = true;
        break;
      }
    }
    if (createdCount > 0) this.deps.logger.warn({ created: createdCount, since }, 'AI recovery scan created missing records');
    return { created: createdCount, resumeFrom: complete ? null : cursor };
  }

  // ---------------------------------------------------------------- workers

  /** 'ai.record.created' (roles all and worker): claim now. A malformed event from another instance is dropped. */
  private onRecordCreated(payload: unknown, meta: EventMeta): void {
    if (this.stopping) return;
    if (meta.origin === 'remote' && recordCreatedEventSchema.validate(payload).error) {
      this.deps.logger.warn({ from_instance: meta.instance_id }, 'AI: invalid ai.record.created event dropped');
      return;
    }
    this.kick();
  }

  private onPoll(): void {
    if (this.rescanSince !== null && !this.rescanning && !this.stopping) {
      const since = this.rescanSince;
      this.rescanSince = null;
      this.rescanning = true;
      this.track(
        this.recover(since)
          .then(({ resumeFrom }) => {
            if (resumeFrom !== null) this.rescanFrom(resumeFrom); // the rest at the next poll
          })
          .catch((err: unknown) => {
            this.deps.logger.error({ err }, 'AI rescan failed: retried at the next poll');
            this.rescanFrom(since);
          })
          .finally(() => {
            this.rescanning = false;
          }),
      );
    }
    this.kick();
  }

  /**
   * One load-shedding step (every loadShedding.intervalMs; public for tests): reads the
   * event-loop delay of the last interval and the users' send p99, halves the limit when
   * either is above its threshold (maxEventLoopDelayMs, maxSendP99Ms), else raises it
   * (AdaptiveLimit). Logs at info when shedding begins and ends, at debug in between.
   * Returns the new limit.
   */
  evaluateLoad(): number {
    const { concurrency, loadShedding } = this.options;
    if (!this.running || this.stopping || (loadShedding.maxEventLoopDelayMs === 0 && loadShedding.maxSendP99Ms === 0)) return this.adaptive.value;
    const delayMs = this.sampler ? this.sampler.sample() : null;
    const sendP99Ms = loadShedding.maxSendP99Ms > 0 ? this.sendP99Ms() : null;
    const loopSlow = delayMs !== null && delayMs > loadShedding.maxEventLoopDelayMs;
    const sendsSlow = sendP99Ms !== null && sendP99Ms > loadShedding.maxSendP99Ms;
    const before = this.adaptive.value;
    const limit = this.adaptive.next(loopSlow || sendsSlow);
    this.lastDelayMs = delayMs;
    this.lastSendP99Ms = sendP99Ms;
    if (delayMs !== null) this.deps.metrics?.eventLoopDelay.set(delayMs / 1000);
    if (limit === before) return limit;
    this.deps.metrics?.concurrencyLimit.set(limit);
    const round = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 10) / 10);
    const fields = {
      limit,
      concurrency,
      event_loop_delay_ms: round(delayMs),
      max_event_loop_delay_ms: loadShedding.maxEventLoopDelayMs,
      send_p99_ms: round(sendP99Ms),
      max_send_p99_ms: loadShedding.maxSendP99Ms,
    };
    if (before === concurrency) {
      this.episode = { since: this.deps.clock.now().getTime(), lowest: limit, deferred: 0 };
      this.deps.logger.info(
        fields,
        `AI load shedding: ${loopSlow ? 'the event loop is delayed' : "users' sends are slow"}, fewer records are worked at once (the rest wait in storage)`,
      );
    } else if (limit === concurrency) {
      const episode = this.episode;
      this.episode = null;
      this.deps.logger.info(
        {
          ...fields,
          shed_for_ms: episode ? this.deps.clock.now().getTime() - episode.since : undefined,
          lowest_limit: episode?.lowest,
          intake_deferred: episode?.deferred,
        },
        'AI load shedding ended: records are worked at full concurrency again',
      );
    } else {
      if (this.episode && limit < this.episode.lowest) this.episode.lowest = limit;
      this.deps.logger.debug(fields, 'AI load shedding: limit changed');
    }
    if (limit > before) this.kick(); // the new slots take pending records at once
    return limit;
  }

  /** Claims and starts due records now (coalesced: one claim loop at a time). Never on an intake instance. */
  kick(): void {
    if (!this.running || this.stopping || !this.works) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.track(
      this.pump()
        .catch((err: unknown) => this.deps.logger.error({ err }, 'AI claim failed (storage?)'))
        .finally(() => {
          this.pumping = false;
        }),
    );
  }

  private async pump(): Promise<void> {
    do {
      this.pumpAgain = false;
      if (this.stopping) return;
      if (!this.breaker.canCall()) {
        this.scheduleWake(this.breaker.retryAt);
        return;
      }
      const halfOpen = this.breaker.state === 'half-open';
      // The adaptive limit, not `concurrency`: records beyond it stay pending in storage until it rises.
      // At most CLAIM_BATCH per claim: every record started runs its first steps (a `thinking`
      // frame to the group, the call's set-up) in the same turn of the event loop, so a claim of
      // hundreds held the sends for a long turn; the next claim's round trip lets them through.
      const free = Math.min(CLAIM_BATCH, halfOpen ? (this.inflight.size === 0 ? 1 : 0) : this.adaptive.value - this.inflight.size);
      if (free <= 0) return;
      const now = this.deps.clock.now().getTime();
      // A new lease owner per claim: records this instance is working (leased by earlier claims) are
      // not returned, so a claim costs the new records only.
      const finished = new Set<string>();
      this.finishedDuringClaim = finished;
      let claimed: AiInteractionRecord[];
      try {
        claimed = await this.store.aiRecords.claimDue({
          owner: `${this.leasePrefix}${(++this.claims).toString(36)}`,
          now: new Date(now).toISOString(),
          lease_until: new Date(now + this.options.leaseMs).toISOString(),
          limit: free,
        });
      } finally {
        this.finishedDuringClaim = null;
      }
      let started = 0;
      for (const r of claimed) {
        // Worked here while the claim ran (its lease ran out, or a retry is due at once): never started
        // from this claim, whose copy may predate the attempt's outcome; the lease it took is given back.
        if (this.inflight.has(r.record_id)) {
          this.releaseWhenDone.add(r.record_id);
        } else if (!finished.has(r.record_id) && started < free && !this.stopping && this.breaker.tryAcquire()) {
          started++;
          this.dispatch(r, now);
        } else {
          await this.releaseLease(r.record_id);
        }
      }
      if (started === free && claimed.length >= free) this.pumpAgain = true;
    } while (this.pumpAgain && !this.stopping);
  }

  private dispatch(record: AiInteractionRecord, claimedAt: number): void {
    const id = record.record_id;
    const ctrl = new AbortController();
    this.inflight.set(id, ctrl);
    this.track(
      this.limit(() => this.attempt(record, claimedAt, ctrl))
        .catch((err: unknown) => {
          this.breaker.release();
          this.deps.logger.error({ err, record_id: id }, 'AI attempt crashed: the record stays pending (retried when its lease expires)');
        })
        .finally(() => {
          this.inflight.delete(id);
          this.finishedDuringClaim?.add(id);
          if (this.releaseWhenDone.delete(id)) {
            this.track(
              this.releaseLease(id)
                .catch((err: unknown) => this.deps.logger.error({ err, record_id: id }, 'AI lease release failed (retried when it expires)'))
                .finally(() => this.kick()),
            );
          } else this.kick();
        }),
    );
  }

  /** One attempt on a claimed record, and its outcome written to the record. */
  private async attempt(claimed: AiInteractionRecord, claimedAt: number, ctrl: AbortController): Promise<void> {
    const { clock, provider } = this.deps;
    if (!provider || ctrl.signal.aborted) {
      this.breaker.release();
      await this.releaseLease(claimed.record_id);
      return;
    }
    // The claim returned the record as it is: while its lease is still far from running out nobody else
    // can have touched it. After a long wait for a slot, re-read: it must still be pending and ours.
    let record = claimed;
    if (clock.now().getTime() - claimedAt > this.rereadAfterMs) {
      const current = await this.store.aiRecords.get(claimed.record_id);
      if (!current || current.status !== AI_STATUS.PENDING || current.lease_owner !== claimed.lease_owner) {
        this.breaker.release();
        return;
      }
      record = current;
    }
    const message = this.history.find(record.group_id, record.user_message_id) ?? (await this.store.messages.get(record.user_message_id));
    if (!message) {
      this.breaker.release();
      await this.finishFailed(record, record.attempts, 'the user message no longer exists', {}, null);
      return;
    }
    const ctx = await this.context(message, record.record_id);
    if (!ctx.assistantMember && this.options.requireAssistant) {
      this.breaker.release();
      await this.finishFailed(record, record.attempts, 'the group has no AI_ASSISTANT member any more', {}, message);
      return;
    }
    const attempts = record.attempts + 1;
    this.notify(message.group_id, message.message_id, 'thinking', record.record_id);
    // One controller per attempt carries both the stop and the attempt timeout.
    let timedOut = false;
    const t0 = performance.now();
    let request: unknown;
    let response: unknown;
    try {
      const timer = setTimeout(() => {
        timedOut = true;
        ctrl.abort(new DOMException('no answer within the attempt timeout', 'TimeoutError'));
      }, this.options.attemptTimeoutMs);
      let result: AiCallResult;
      try {
        result = await provider.call(ctx.input, ctrl.signal);
      } finally {
        clearTimeout(timer);
      }
      request = result.request;
      response = result.response;
      this.breaker.success();
      const duration = Math.round(performance.now() - t0);
      this.observe('succeeded', duration);
      let aiMessageId: string | null = null;
      let note: string | null = null;
      if (result.reply !== null && result.reply.trim() !== '') {
        if (ctx.assistantMember) {
          // Longer than the chat accepts: post its beginning and the marker (one message, so that
          // ai_message_id and the client_msg_id below still name the one reply of this record).
          const { maxContentLength } = this.deps;
          const fit = fitReply(result.reply, maxContentLength, this.options.replyTruncationMarker);
          const sent = await this.deps.chatService.send(
            { user_id: ctx.assistantMember.user_id, admin: false },
            { group_id: message.group_id, msg_type: 'AI_REPLY', msg_content: fit.content, client_msg_id: `ai:${record.record_id}` },
            { transport: AI_TRANSPORT, allowAiReply: true },
          );
          aiMessageId = sent.message.message_id;
          if (fit.truncated) {
            note = `reply truncated: ${result.reply.length} characters, chat.maxContentLength is ${maxContentLength}; the full reply is in response_content`;
            // Counted and logged once per posted reply (not again when a retried post finds it).
            if (sent.created) {
              this.deps.metrics?.repliesTruncated.inc();
              this.deps.logger.warn(
                {
                  record_id: record.record_id,
                  group_id: message.group_id,
                  ai_message_id: aiMessageId,
                  reply_length: result.reply.length,
                  posted_length: fit.content.length,
                  max_content_length: maxContentLength,
                },
                'AI reply longer than chat.maxContentLength: posted truncated',
              );
            }
          }
        } else {
          note = 'reply not posted: the group has no AI_ASSISTANT member';
        }
      }
      await this.patch(record.record_id, {
        status: AI_STATUS.SUCCEEDED,
        attempts,
        ai_message_id: aiMessageId,
        duration_ms: duration,
        error_message: note,
        request_content: json(request),
        response_content: json(response),
        ai_service_url: provider.url,
        next_attempt_at: null,
        lease_owner: null,
        lease_until: null,
      });
      this.deps.logger.debug({ record_id: record.record_id, attempts, duration_ms: duration, replied: aiMessageId !== null }, 'AI call succeeded');
    } catch (err) {
      const duration = Math.round(performance.now() - t0);
      if (ctrl.signal.aborted && this.stopping && !timedOut) {
        // Shutdown, not the service's fault: the record stays pending for the next start (attempt not counted).
        this.breaker.release();
        await this.releaseLease(record.record_id).catch(() => undefined);
        return;
      }
      const e = this.asCallError(err, timedOut);
      request = request ?? e.opts.request ?? ctx.input;
      response = response ?? e.opts.response;
      if (err instanceof AiCallError) {
        if (e.retryable) this.breaker.failure();
        else this.breaker.success(); // the service answered: it is alive
        this.observe(e.retryable ? 'error' : 'rejected', duration);
      }
      if (e.retryable && attempts < this.options.maxAttempts) {
        const delay = retryDelayMs(attempts, this.options.backoff, e.opts.retryAfterMs, this.options.maxRetryAfterMs);
        const due = clock.now().getTime() + delay;
        await this.patch(record.record_id, {
          status: AI_STATUS.PENDING,
          attempts,
          duration_ms: duration,
          error_message: e.message,
          request_content: json(request),
          response_content: json(response),
          ai_service_url: provider.url,
          next_attempt_at: new Date(due).toISOString(),
          lease_owner: null,
          lease_until: null,
        });
        this.deps.logger.warn({ record_id: record.record_id, attempts, retry_in_ms: delay, error: e.message }, 'AI attempt failed: will retry');
        this.scheduleWake(due);
      } else {
        await this.finishFailed(record, attempts, e.message, { request, response, duration }, message);
      }
    }
  }

  private asCallError(err: unknown, timedOut: boolean): AiCallError {
    if (err instanceof AiCallError) {
      if (timedOut && err.message === 'aborted') return new AiCallError('timeout: no answer within the attempt timeout', true, err.opts);
      return err;
    }
    if (err instanceof AppError) {
      // Posting the reply failed (storage down = retryable; a reply the chat rejects = not).
      return new AiCallError(`posting the reply failed: ${err.message}`, err.retryable);
    }
    return new AiCallError(`unexpected error: ${(err as Error)?.message ?? String(err)}`, true);
  }

  private async finishFailed(
    record: AiInteractionRecord,
    attempts: number,
    error: string,
    extra: { request?: unknown; response?: unknown; duration?: number },
    message: Message | null,
  ): Promise<void> {
    await this.patch(record.record_id, {
      status: AI_STATUS.FAILED,
      attempts,
      error_message: error,
      ...(extra.duration !== undefined ? { duration_ms: extra.duration } : {}),
      ...(extra.request !== undefined ? { request_content: json(extra.request) } : {}),
      ...(extra.response !== undefined ? { response_content: json(extra.response) } : {}),
      ai_service_url: this.deps.provider?.url ?? record.ai_service_url,
      next_attempt_at: null,
      lease_owner: null,
      lease_until: null,
    });
    this.deps.logger.warn({ record_id: record.record_id, attempts, error }, 'AI record failed');
    this.notify(record.group_id, message?.message_id ?? record.user_message_id, 'failed', record.record_id);
  }

  /** The provider input: sender and assistant, the last N messages, and the users in them (user_role = role in the group). */
  private async context(message: Message, recordId: string): Promise<{ input: AiCallInput; assistantMember: Member | null }> {
    const [members, history] = await Promise.all([this.groupMembers(message.group_id), this.history.upTo(message, this.options.historySize)]);
    const assistantMember = members.assistant;
    const ids = [message.from_user_id];
    if (assistantMember && assistantMember.user_id !== message.from_user_id) ids.push(assistantMember.user_id);
    for (const m of history) if (!ids.includes(m.from_user_id)) ids.push(m.from_user_id);
    const users = await this.members.users(message.group_id, members, ids);
    const now = this.deps.clock.nowIso();
    const placeholder = (id: string, role: User['user_role']): User => ({ user_id: id, username: id, user_role: role, created_at: now, updated_at: now });
    const sender = users.get(message.from_user_id) ?? placeholder(message.from_user_id, 'PATIENT');
    const assistant = assistantMember
      ? (users.get(assistantMember.user_id) ?? placeholder(assistantMember.user_id, 'AI_ASSISTANT'))
      : placeholder('', 'AI_ASSISTANT');
    return {
      assistantMember,
      input: { record_id: recordId, group_id: message.group_id, message, sender, assistant, history, users },
    };
  }

  // ---------------------------------------------------------------- helpers

  private async patch(recordId: string, patch: Omit<AiRecordPatch, 'updated_at'>): Promise<void> {
    await this.store.aiRecords.update(recordId, { ...patch, updated_at: this.deps.clock.nowIso() });
  }

  private async releaseLease(recordId: string): Promise<void> {
    await this.patch(recordId, { lease_owner: null, lease_until: null });
  }

  private notify(groupId: string, userMessageId: string, status: AiStatusFrame['status'], recordId?: string): void {
    const frame: AiStatusFrame = { type: 'ai_status', group_id: groupId, user_message_id: userMessageId, status };
    if (recordId) frame.record_id = recordId;
    this.deps.bus.publish('group.notify', { group_id: groupId, frame });
  }

  private observe(outcome: 'succeeded' | 'error' | 'rejected', durationMs: number): void {
    this.deps.metrics?.calls.inc({ outcome });
    this.deps.metrics?.latency.observe({ outcome }, durationMs / 1000);
  }

  /** One timer for the earliest known due time (retries, breaker reset). */
  private scheduleWake(atMs: number): void {
    if (!this.running || this.stopping || atMs <= 0) return;
    if (this.wakeTimer && this.wakeAt <= atMs) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeAt = atMs;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAt = 0;
      this.kick();
    }, Math.max(0, atMs - this.deps.clock.now().getTime()) + 5);
    this.wakeTimer.unref();
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.tasks.add(p);
    void p.finally(() => this.tasks.delete(p)).catch(() => undefined);
    return p;
  }

  // ---------------------------------------------------------------- API

  /** GET /api/ai/interactions: admin, or a DOCTOR member of group_id. Newest first. */
  async listInteractions(actor: Principal, query: unknown): Promise<PublicAiRecord[]> {
    const q = validate(interactionsQuerySchema, query, 'query');
    if (!actor.admin) {
      if (q.group_id === undefined) throw new ForbiddenError('only an admin may list every group; pass group_id');
      const member = await this.deps.storage.members.get(q.group_id, actor.user_id);
      if (!member) {
        if (!(await this.deps.storage.groups.get(q.group_id))) throw new NotFoundError(`group '${q.group_id}' not found`);
        throw new ForbiddenError(`'${actor.user_id}' is not a member of group '${q.group_id}'`);
      }
      if (member.user_role !== 'DOCTOR') throw new ForbiddenError('only a DOCTOR member of the group (or an admin) may read its AI interactions');
    }
    const records = await this.deps.storage.aiRecords.list({ group_id: q.group_id, status: q.status, limit: q.limit });
    return records.map(publicRecord);
  }

  /** POST /api/ai/test: one real call to the configured service (admin). */
  async testCall(actor: Principal): Promise<AiTestResult> {
    if (!actor.admin) throw new ForbiddenError('admin only');
    const provider = this.deps.provider;
    if (!provider || !provider.configured) return { ok: false, duration_ms: 0, error: 'AI service not configured (set IM_AI_URL)' };
    const now = this.deps.clock.nowIso();
    const patient: User = { user_id: 'ai-test-patient', username: 'Connectivity test', user_role: 'PATIENT', created_at: now, updated_at: now };
    const assistant: User = { user_id: 'ai-test-assistant', username: 'AI assistant', user_role: 'AI_ASSISTANT', created_at: now, updated_at: now };
    const message: Message = {
      message_id: `ai-test-${this.deps.ids.next()}`,
      group_id: 'ai-test',
      seq: 1,
      from_user_id: patient.user_id,
      msg_type: 'TEXT',
      msg_content: 'Connectivity test from the IM service (POST /api/ai/test). No reply is needed.',
      client_msg_id: null,
      created_at: now,
    };
    const input: AiCallInput = {
      record_id: `test-${this.deps.ids.next()}`,
      group_id: message.group_id,
      message,
      sender: patient,
      assistant,
      history: [message],
      users: new Map([
        [patient.user_id, patient],
        [assistant.user_id, assistant],
      ]),
    };
    const t0 = performance.now();
    try {
      await this.limit(() => provider.call(input, AbortSignal.timeout(this.options.attemptTimeoutMs)));
      return { ok: true, duration_ms: Math.round(performance.now() - t0) };
    } catch (err) {
      const msg = err instanceof AiCallError ? err.message : `unexpected error: ${(err as Error)?.message ?? String(err)}`;
      return { ok: false, duration_ms: Math.round(performance.now() - t0), error: msg };
    }
  }
}

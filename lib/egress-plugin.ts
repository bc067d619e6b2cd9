import { asValue } from 'awilix';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Container } from '../kernel/container.js';
import { UnavailableError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { definePlugin, type Plugin } from '../kernel/plugin.js';
import { subscribeEgress, type EgressEvent } from './broker-payload.js';
import { metricRegistries } from './metrics.js';
import { READINESS_CHECKS, type ReadinessCheck } from './readiness.js';

/** What becomes of an egress event: published, or why not (`failed`, `duplicate`: only where the mode has confirms). */
export type EgressOutcome = 'published' | 'dropped' | 'failed' | 'duplicate';

/** An egress's totals since start, by outcome (each mode counts those it has). */
export type EgressTotals = Partial<Record<EgressOutcome, number>>;

/** What an egress plugin registers in the container (tests and operators read it). */
export interface EgressStatus<S extends EgressTotals> {
  readonly connected: boolean;
  /** Events buffered while the broker is away, or awaiting its confirmation. */
  readonly pending: number;
  /** Totals since start, by outcome. */
  readonly stats: Readonly<S>;
}

/** A running egress: takes events from the bus (never blocking it), publishes them, drains on stop. */
export interface EgressRuntime<S extends EgressTotals> extends EgressStatus<S> {
  /** Called from the bus: enqueue only. */
  enqueue(e: EgressEvent): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface EgressSpec<O extends { connectionName?: string }, S extends EgressTotals> {
  /** Unit name, e.g. 'amqp-egress'. */
  name: string;
  transport: 'amqp' | 'nats';
  /** Container key of the status object (augment Cradle with it). */
  statusKey: string;
  options(raw: unknown, config: Readonly<Record<string, unknown>>): O;
  create(options: O & { connectionName: string }, logger: Logger): EgressRuntime<S>;
  /** The readiness check's message while not connected. */
  notReady(options: O): string;
}

/**
 * The one shape of a broker egress plugin: builds the runtime in register (so
 * its status object, readiness check and metrics are there before any
 * start), subscribes it to the bus's egress events in start, before the first
 * connection (events of that time wait in its buffer), and in stop
 * unsubscribes and drains it. Runtimes are kept per kernel (keyed by
 * container), never in module state shared by kernels.
 */
export function defineEgressPlugin<O extends { connectionName?: string }, S extends EgressTotals>(spec: EgressSpec<O, S>): Plugin<O> {
  const runtimes = new WeakMap<object, { egress: EgressRuntime<S>; unsubscribe: (() => void) | null }>();
  return definePlugin<O>({
    name: spec.name,
    after: ['metrics'],
    options: spec.options,
    register({ container, options, logger, contributions }) {
      const egress = spec.create({ ...options, connectionName: options.connectionName ?? `im-${spec.name}@${container.cradle.instanceId}` }, logger);
      runtimes.set(container, { egress, unsubscribe: null });
      container.register(
        spec.statusKey,
        asValue<EgressStatus<S>>({
          get connected() {
            return egress.connected;
          },
          get pending() {
            return egress.pending;
          },
          get stats() {
            return egress.stats;
          },
        }),
      );
      const check: ReadinessCheck = {
        name: spec.name,
        check: async () => {
          if (!egress.connected) throw new UnavailableError(spec.notReady(options));
        },
      };
      contributions.add(READINESS_CHECKS, check);
      exportEgressMetrics(container, spec.transport, egress);
    },
    async start({ container }) {
      const rt = runtimes.get(container)!;
      const { bus, instanceId } = container.cradle;
      // subscribed first: events stored while the first connection is being made wait in the buffer
      rt.unsubscribe = subscribeEgress(bus, instanceId, (e) => rt.egress.enqueue(e));
      try {
        await rt.egress.start();
      } catch (err) {
        // a failed start is not followed by stop()
        rt.unsubscribe();
        rt.unsubscribe = null;
        throw err;
      }
    },
    async stop({ container }) {
      const rt = runtimes.get(container);
      if (!rt) return;
      rt.unsubscribe?.();
      rt.unsubscribe = null;
      await rt.egress.stop();
    },
  });
}

const EGRESS_EVENTS_METRIC = 'im_broker_egress_events_total';
const EGRESS_PENDING_METRIC = 'im_broker_egress_pending';
/** Per registry: the egress plugins of that kernel, read at every scrape. */
const egressSources = new WeakMap<Registry, Map<'amqp' | 'nats', EgressStatus<EgressTotals>>>();

/**
 * Exports an egress plugin's totals and backlog in this kernel's metrics
 * registry (when the metrics plugin is enabled), read at scrape time:
 * `im_broker_egress_events_total{transport,outcome}` and
 * `im_broker_egress_pending{transport}` (shared by both egress plugins).
 */
function exportEgressMetrics(container: Container, transport: 'amqp' | 'nats', source: EgressStatus<EgressTotals>): void {
  for (const reg of metricRegistries(container)) {
    let sources = egressSources.get(reg);
    if (!sources) {
      const all = new Map<'amqp' | 'nats', EgressStatus<EgressTotals>>();
      sources = all;
      egressSources.set(reg, all);
      new Counter({
        name: EGRESS_EVENTS_METRIC,
        help: 'Broker egress events by transport and outcome: published (confirmed by the broker where the mode has confirms), dropped (buffer full, refused, left at stop), failed (no confirmation after maxAttempts), duplicate (a retry the stream already had)',
        labelNames: ['transport', 'outcome'] as const,
        registers: [reg],
        collect() {
          // the plugins keep the totals; the counter repeats them at each scrape
          this.reset();
          for (const [t, s] of all) for (const [outcome, n] of Object.entries(s.stats)) if (n !== undefined) this.inc({ transport: t, outcome }, n);
        },
      });
      new Gauge({
        name: EGRESS_PENDING_METRIC,
        help: 'Broker egress events buffered (broker away) or awaiting the broker confirmation, by transport',
        labelNames: ['transport'] as const,
        registers: [reg],
        collect() {
          for (const [t, s] of all) this.set({ transport: t }, s.pending);
        },
      });
    }
    sources.set(transport, source);
  }
}

import { asValue } from 'awilix';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import { definePlugin, type Plugin } from '../kernel/plugin.js';
import type { ChatService } from '../kernel/ports/services.port.js';
import { deliveryRecorder, newStats, type DeliveryOutcome, type DeliveryStats, type IngressStatus } from './broker-payload.js';
import { READINESS_CHECKS, type ReadinessCheck } from './readiness.js';

/** What every broker ingress receives. */
export interface IngressDeps {
  chatService: ChatService;
  clock: Clock;
  instanceId: string;
  logger: Logger;
  stats: DeliveryStats;
  record: (o: DeliveryOutcome) => void;
}

/** A running ingress: consumes, reports its state, drains on stop. */
export interface IngressRuntime extends IngressStatus {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves while connected and consuming (readiness). */
  check(): Promise<void>;
}

export interface IngressSpec<O extends { connectionName?: string }> {
  /** Unit name, e.g. 'amqp-ingress'. */
  name: string;
  transport: 'amqp' | 'nats';
  /** Container key of the status object (augment Cradle with it). */
  statusKey: string;
  options(raw: unknown, config: Readonly<Record<string, unknown>>): O;
  create(options: O & { connectionName: string }, deps: IngressDeps): IngressRuntime;
}

/**
 * The one shape of a broker ingress plugin: registers a status object and a
 * readiness check, builds the runtime in start() (once every unit has
 * registered: chatService, metrics) and drains it in stop(). Runtimes are kept
 * per kernel (keyed by container), never in module state shared by kernels.
 */
export function defineIngressPlugin<O extends { connectionName?: string }>(spec: IngressSpec<O>): Plugin<O> {
  const runtimes = new WeakMap<object, IngressRuntime>();
  const stats = new WeakMap<object, DeliveryStats>();
  return definePlugin<O>({
    name: spec.name,
    dependsOn: ['chat'],
    // Started after what reacts to stored messages (transports, egress, AI), so it stops first.
    after: ['metrics', 'http', 'ws', 'ai-router', 'amqp-egress', 'nats-egress', 'cluster'],
    options: spec.options,
    register({ container, contributions }) {
      const s = newStats();
      stats.set(container, s);
      container.register(
        spec.statusKey,
        asValue<IngressStatus>({
          get connected() {
            return runtimes.get(container)?.connected ?? false;
          },
          get stats() {
            return s;
          },
          get inFlight() {
            return runtimes.get(container)?.inFlight ?? 0;
          },
        }),
      );
      const check: ReadinessCheck = {
        name: spec.transport,
        check: () => runtimes.get(container)?.check() ?? Promise.reject(new Error(`${spec.transport}: ingress not started`)),
      };
      contributions.add(READINESS_CHECKS, check);
    },
    async start({ container, options, logger }) {
      const c = container.cradle;
      const s = stats.get(container)!;
      const runtime = spec.create(
        { ...options, connectionName: options.connectionName ?? `im-${spec.name}@${c.instanceId}` },
        { chatService: c.chatService, clock: c.clock, instanceId: c.instanceId, logger, stats: s, record: deliveryRecorder(container, spec.transport, s) },
      );
      runtimes.set(container, runtime);
      await runtime.start();
    },
    async stop({ container }) {
      await runtimes.get(container)?.stop();
    },
  });
}

import { aliasTo, asFunction } from 'awilix';
import { Counter, Gauge } from 'prom-client';
import { definePlugin } from '../../../kernel/plugin.js';
import { hasNatsSecurity, natsSharedEndpoint, pickNatsSecurity, resolveNatsEndpoint, validateNatsSection, withoutEmptyNatsSecurity } from '../../../lib/nats-connection.js';
// The contribution point's name only (a public contract file): /readyz reports the NATS connection.
import { READINESS_CHECKS, type ReadinessCheck } from '../../../lib/readiness.js';
import { metricRegistries } from '../../../lib/metrics.js';
import { NatsClusterBus, type ClusterBusMetrics, type ClusterBusStatus } from './nats-cluster.bus.js';
import { natsClusterOptionsSchema, type NatsClusterOptions } from './nats-cluster.schema.js';

declare module '../../../kernel/container.js' {
  interface Cradle {
    /** Present when a cluster bus adapter is enabled. */
    clusterBus: ClusterBusStatus;
    /** Internal to the NATS cluster adapter. */
    natsClusterBus: NatsClusterBus;
  }
}

function section(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/**
 * The `cluster` slot over NATS: N instances sharing one database and one NATS
 * behave as one service (every instance's sockets see every stored message
 * and membership change). Config: `adapters.cluster = "nats"`, URL from
 * `cluster.url` or `nats.url` (IM_NATS_URL, which also enables this adapter).
 * Credentials and TLS come with the URL: from section `nats` (IM_NATS_*, shared
 * with the broker plugins) for `nats.url`, from section `cluster` for `cluster.url`.
 */
export const natsClusterAdapter = definePlugin<NatsClusterOptions>({
  name: 'cluster',
  kind: 'adapter',
  impl: 'nats',
  after: ['metrics'],
  options: (raw, config) => {
    const own = withoutEmptyNatsSecurity(section(raw));
    const shared = section(config.nats).url;
    const useShared = own.url === undefined && shared !== undefined && shared !== '';
    if (useShared && hasNatsSecurity(own)) {
      throw new Error('user, password, token, credsFile, nkeySeedFile and tls apply only with cluster.url: set them in section nats (IM_NATS_*) for nats.url');
    }
    const settings = validateNatsSection(natsClusterOptionsSchema, useShared ? { ...own, url: shared } : own, '');
    const endpoint = useShared
      ? natsSharedEndpoint(config, settings.url)
      : resolveNatsEndpoint(settings.url, pickNatsSecurity(settings as unknown as Record<string, unknown>), '', 'cluster');
    return { ...settings, endpoint };
  },
  register({ container, options, logger, contributions }) {
    const registers = metricRegistries(container);
    let metrics: ClusterBusMetrics | null = null;
    if (registers.length > 0) {
      metrics = {
        outboxDropped: new Counter({
          name: 'im_cluster_outbox_dropped_total',
          help: 'Local events never relayed to other instances: dropped from the cluster bus outbox while disconnected from NATS (oldest first, past cluster.outboxMaxEvents), or left in it when the instance stopped',
          registers,
        }),
      };
      new Gauge({
        name: 'im_cluster_outbox_queued',
        help: 'Local events waiting in the cluster bus outbox for the reconnect to NATS',
        registers,
        collect() {
          this.set(container.resolve('natsClusterBus').outboxQueued);
        },
      });
    }
    container.register({
      natsClusterBus: asFunction(({ bus, instanceId }) => new NatsClusterBus({ bus, instanceId, logger, metrics }, options)).singleton(),
      clusterBus: aliasTo('natsClusterBus'),
    });
    contributions.add<ReadinessCheck>(READINESS_CHECKS, {
      name: 'cluster',
      async check() {
        if (!container.resolve('clusterBus').connected) throw new Error('cluster bus is not connected to NATS');
      },
    });
  },
  async start({ container }) {
    await container.resolve('natsClusterBus').start();
  },
  async stop({ container }) {
    await container.resolve('natsClusterBus').stop();
  },
});

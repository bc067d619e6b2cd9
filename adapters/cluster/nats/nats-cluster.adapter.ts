import { aliasTo, asFunction } from 'awilix';
import { definePlugin } from '../../../kernel/plugin.js';
import { validateOptions } from '../../../lib/validate.js';
// The contribution point's name only (a public contract file): /readyz reports the NATS connection.
import { READINESS_CHECKS, type ReadinessCheck } from '../../../lib/readiness.js';
import { NatsClusterBus, type ClusterBusStatus } from './nats-cluster.bus.js';
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
 */
export const natsClusterAdapter = definePlugin<NatsClusterOptions>({
  name: 'cluster',
  kind: 'adapter',
  impl: 'nats',
  options: (raw, config) => {
    const own = section(raw);
    const shared = section(config.nats).url;
    return validateOptions(natsClusterOptionsSchema, own.url === undefined && shared !== undefined ? { ...own, url: shared } : own);
  },
  register({ container, options, logger, contributions }) {
    container.register({
      natsClusterBus: asFunction(({ bus, instanceId }) => new NatsClusterBus({ bus, instanceId, logger }, options)).singleton(),
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

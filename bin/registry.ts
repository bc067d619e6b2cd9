import type { Plugin } from '../kernel/plugin.js';

type Loader = () => Promise<Plugin<unknown>>;

/**
 * The one registry: config names -> units, loaded lazily so a disabled
 * plugin's drivers are never imported. Adding a plugin = a folder + a line here
 * + its name in a config file; the kernel never changes.
 */
export const PLUGINS: Readonly<Record<string, Loader>> = {
  auth: async () => (await import('../plugins/auth/auth.plugin.js')).authPlugin,
  users: async () => (await import('../plugins/users/users.plugin.js')).usersPlugin,
  groups: async () => (await import('../plugins/groups/groups.plugin.js')).groupsPlugin,
  chat: async () => (await import('../plugins/chat/chat.plugin.js')).chatPlugin,
  'amqp-ingress': async () => (await import('../plugins/amqp-ingress/amqp-ingress.plugin.js')).amqpIngressPlugin,
  'amqp-egress': async () => (await import('../plugins/amqp-egress/amqp-egress.plugin.js')).amqpEgressPlugin,
  'nats-ingress': async () => (await import('../plugins/nats-ingress/nats-ingress.plugin.js')).natsIngressPlugin,
  'nats-egress': async () => (await import('../plugins/nats-egress/nats-egress.plugin.js')).natsEgressPlugin,
  http: async () => (await import('../plugins/http/http.plugin.js')).httpPlugin,
  metrics: async () => (await import('../plugins/metrics/metrics.plugin.js')).metricsPlugin,
  console: async () => (await import('../plugins/console/console.plugin.js')).consolePlugin,
  'ai-router': async () => (await import('../plugins/ai-router/ai-router.plugin.js')).aiRouterPlugin,
  ws: async () => (await import('../plugins/ws/ws.plugin.js')).wsPlugin,
};

/** Port slot -> implementation name -> adapter unit. */
export const ADAPTERS: Readonly<Record<string, Readonly<Record<string, Loader>>>> = {
  storage: {
    memory: async () => (await import('../adapters/storage/memory/memory-storage.adapter.js')).memoryStorageAdapter,
    sequelize: async () => (await import('../adapters/storage/sequelize/sequelize-storage.adapter.js')).sequelizeStorageAdapter,
  },
  cluster: {
    nats: async () => (await import('../adapters/cluster/nats/nats-cluster.adapter.js')).natsClusterAdapter,
  },
  'ai-provider': {
    webhook: async () => (await import('../adapters/ai/webhook/webhook-provider.adapter.js')).webhookAiProviderAdapter,
    openai: async () => (await import('../adapters/ai/openai/openai-provider.adapter.js')).openAiProviderAdapter,
  },
};

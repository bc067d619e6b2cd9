import { asValue } from 'awilix';
import { Gauge } from 'prom-client';
import type { Container } from '../../../kernel/container.js';
import { KernelError } from '../../../kernel/errors.js';
import { definePlugin } from '../../../kernel/plugin.js';
import { metricRegistries } from '../../../lib/metrics.js';
import { parseStorageOptions, type SequelizeStorageOptions } from './sequelize.schema.js';
import { SequelizeStorage } from './sequelize.storage.js';

function storageOf(container: Container): SequelizeStorage {
  const s = container.resolve('storage');
  if (!(s instanceof SequelizeStorage)) throw new KernelError('storage: the registered storage is not the sequelize adapter');
  return s;
}

/**
 * Storage slot on Sequelize: PostgreSQL (pg) or SQLite chosen by `storage.url`.
 * register() builds the (unconnected) storage; start() connects and migrates;
 * stop() finishes queued appends and closes the pool.
 */
export const sequelizeStorageAdapter = definePlugin<SequelizeStorageOptions>({
  name: 'storage',
  kind: 'adapter',
  impl: 'sequelize',
  after: ['metrics'],
  options: (raw) => parseStorageOptions(raw),
  register({ container, options, logger }) {
    const storage = new SequelizeStorage(options, logger);
    container.register({ storage: asValue(storage) });
    const registers = metricRegistries(container);
    if (registers.length > 0 && storage.dialect === 'postgres') {
      new Gauge({
        name: 'im_storage_pool_connections',
        help: 'Database pool connections by pool (write/background/read) and state (in_use/idle/waiting)',
        labelNames: ['pool', 'state'] as const,
        registers,
        collect() {
          for (const p of storage.poolStats() ?? []) {
            this.set({ pool: p.pool, state: 'in_use' }, p.using);
            this.set({ pool: p.pool, state: 'idle' }, p.idle);
            this.set({ pool: p.pool, state: 'waiting' }, p.waiting);
          }
        },
      });
    }
  },
  async start({ container }) {
    const storage = storageOf(container);
    try {
      await storage.open();
    } catch (err) {
      await storage.stop();
      throw err;
    }
  },
  async stop({ container }) {
    await storageOf(container).stop();
  },
});

import { asValue } from 'awilix';
import { definePlugin } from '../../../kernel/plugin.js';
import { MemoryStorage } from './memory.storage.js';

/** Storage slot filled in memory: nothing persists across restarts (tests, demos). */
export const memoryStorageAdapter = definePlugin<Record<string, unknown>>({
  name: 'storage',
  kind: 'adapter',
  impl: 'memory',
  options: (raw) => (typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : {}),
  register({ container }) {
    container.register({ storage: asValue(new MemoryStorage()) });
  },
});

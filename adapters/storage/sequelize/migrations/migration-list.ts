import type { QueryInterface } from 'sequelize';
import { initialSchema } from '../migrations/0001-initial-schema.migration.js';
import { aiRecordsPendingIndex } from '../migrations/0002-ai-records-pending-index.migration.js';

/** One versioned schema change. Names sort in the order they must run; never edit one that has shipped. */
export interface Migration {
  name: string;
  up(qi: QueryInterface): Promise<void>;
  down(qi: QueryInterface): Promise<void>;
}

/** Every migration, in order (a static list: no file globbing, works from build/). */
export const MIGRATIONS: readonly Migration[] = [initialSchema, aiRecordsPendingIndex];

import type { QueryInterface } from 'sequelize';
import type { Migration } from './migration-list.js';

/**
 * claimDue reads pending records (status 0) oldest first. With only
 * `(status, next_attempt_at)` and `(created_at)` to choose from, PostgreSQL
 * planned that read from statistics taken while the table was young and
 * mostly pending, and scanned every record ever written at each claim: a
 * claim's cost grew with the table (measured in the benchmark's S7: millions
 * of rows read per second after a few minutes). A partial index holds the
 * pending records only, in claim order, so a claim reads those and nothing
 * else whatever the statistics say.
 */
export const aiRecordsPendingIndex: Migration = {
  name: '0002-ai-records-pending-index',
  async up(qi: QueryInterface) {
    await qi.addIndex('ai_interaction_records', ['created_at', 'record_id'], { name: 'ai_records_pending_idx', where: { status: 0 } });
  },
  async down(qi: QueryInterface) {
    await qi.removeIndex('ai_interaction_records', 'ai_records_pending_idx');
  },
};

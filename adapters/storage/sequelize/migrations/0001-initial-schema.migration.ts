import { DataTypes, type QueryInterface } from 'sequelize';
import type { Migration } from './migration-list.js';

const ID = DataTypes.STRING(64);

/**
 * The seed tables (users, groups, group_members, messages,
 * ai_interaction_records) plus: messages.seq with unique (group_id, seq),
 * messages.client_msg_id with unique (group_id, from_user_id, client_msg_id),
 * the per-group seq counter (group_seq_counters), unique
 * ai_interaction_records.user_message_id, and the retry/lease columns.
 * Timestamps are TIMESTAMPTZ on PostgreSQL and ISO-8601 text on SQLite.
 */
export const initialSchema: Migration = {
  name: '0001-initial-schema',
  async up(qi: QueryInterface) {
    await qi.createTable('users', {
      user_id: { type: ID, primaryKey: true, allowNull: false },
      username: { type: DataTypes.STRING(128), allowNull: false },
      user_role: { type: DataTypes.STRING(16), allowNull: false, defaultValue: 'PATIENT' },
      created_at: { type: DataTypes.DATE, allowNull: false },
      updated_at: { type: DataTypes.DATE, allowNull: false },
    });
    await qi.addIndex('users', ['user_role'], { name: 'users_user_role_idx' });

    await qi.createTable('groups', {
      group_id: { type: ID, primaryKey: true, allowNull: false },
      group_name: { type: DataTypes.STRING(128), allowNull: false },
      description: { type: DataTypes.TEXT, allowNull: true },
      // Not a foreign key: an admin (not a stored user) may create groups.
      created_by: { type: ID, allowNull: false },
      created_at: { type: DataTypes.DATE, allowNull: false },
      updated_at: { type: DataTypes.DATE, allowNull: false },
    });
    await qi.addIndex('groups', ['created_by'], { name: 'groups_created_by_idx' });

    await qi.createTable('group_seq_counters', {
      group_id: {
        type: ID,
        primaryKey: true,
        allowNull: false,
        references: { model: 'groups', key: 'group_id' },
        onDelete: 'CASCADE',
      },
      last_seq: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
    });

    await qi.createTable('group_members', {
      // Surrogate key: keeps join order for listing.
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true, allowNull: false },
      group_id: { type: ID, allowNull: false, references: { model: 'groups', key: 'group_id' }, onDelete: 'CASCADE' },
      user_id: { type: ID, allowNull: false, references: { model: 'users', key: 'user_id' }, onDelete: 'CASCADE' },
      user_role: { type: DataTypes.STRING(16), allowNull: false },
      joined_at: { type: DataTypes.DATE, allowNull: false },
    });
    await qi.addIndex('group_members', ['group_id', 'user_id'], { name: 'group_members_group_user_uq', unique: true });
    await qi.addIndex('group_members', ['user_id'], { name: 'group_members_user_idx' });

    // No foreign keys on messages: on PostgreSQL each one costs an index lookup
    // and a row lock on the group/user per inserted message (multixacts under
    // concurrent batches, ~20 % of append throughput). The group is still
    // checked once per batch by the group_seq_counters foreign key (every
    // append advances its group's counter), and senders are members (checked
    // by the chat service against group_members, which has foreign keys).
    await qi.createTable('messages', {
      message_id: { type: ID, primaryKey: true, allowNull: false },
      group_id: { type: ID, allowNull: false },
      seq: { type: DataTypes.INTEGER, allowNull: false },
      from_user_id: { type: ID, allowNull: false },
      msg_type: { type: DataTypes.STRING(16), allowNull: false, defaultValue: 'TEXT' },
      msg_content: { type: DataTypes.TEXT, allowNull: false },
      client_msg_id: { type: DataTypes.STRING(128), allowNull: true },
      created_at: { type: DataTypes.DATE, allowNull: false },
    });
    // Paging by seq (the hot read) and the gap-free guarantee.
    await qi.addIndex('messages', ['group_id', 'seq'], { name: 'messages_group_seq_uq', unique: true });
    // Idempotent send.
    await qi.addIndex('messages', ['group_id', 'from_user_id', 'client_msg_id'], { name: 'messages_client_msg_uq', unique: true });
    // listRecent (crash-recovery scans).
    await qi.addIndex('messages', ['created_at', 'message_id'], { name: 'messages_created_idx' });

    await qi.createTable('ai_interaction_records', {
      record_id: { type: ID, primaryKey: true, allowNull: false },
      group_id: { type: ID, allowNull: false, references: { model: 'groups', key: 'group_id' }, onDelete: 'CASCADE' },
      user_message_id: { type: ID, allowNull: false },
      ai_message_id: { type: ID, allowNull: true },
      ai_service_url: { type: DataTypes.TEXT, allowNull: false },
      request_content: { type: DataTypes.TEXT, allowNull: true },
      response_content: { type: DataTypes.TEXT, allowNull: true },
      status: { type: DataTypes.SMALLINT, allowNull: false, defaultValue: 0 },
      duration_ms: { type: DataTypes.INTEGER, allowNull: true },
      error_message: { type: DataTypes.TEXT, allowNull: true },
      attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
      next_attempt_at: { type: DataTypes.DATE, allowNull: true },
      lease_owner: { type: DataTypes.STRING(128), allowNull: true },
      lease_until: { type: DataTypes.DATE, allowNull: true },
      created_at: { type: DataTypes.DATE, allowNull: false },
      updated_at: { type: DataTypes.DATE, allowNull: false },
    });
    await qi.addIndex('ai_interaction_records', ['user_message_id'], { name: 'ai_records_user_message_uq', unique: true });
    // claimDue: pending records by due time.
    await qi.addIndex('ai_interaction_records', ['status', 'next_attempt_at'], { name: 'ai_records_status_due_idx' });
    // list by group, newest first.
    await qi.addIndex('ai_interaction_records', ['group_id', 'created_at'], { name: 'ai_records_group_created_idx' });
    await qi.addIndex('ai_interaction_records', ['created_at'], { name: 'ai_records_created_idx' });
  },
  async down(qi: QueryInterface) {
    await qi.dropTable('ai_interaction_records');
    await qi.dropTable('messages');
    await qi.dropTable('group_members');
    await qi.dropTable('group_seq_counters');
    await qi.dropTable('groups');
    await qi.dropTable('users');
  },
};

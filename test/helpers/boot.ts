import type { Test } from 'tap';
import { composeKernel } from '../../bin/compose.js';
import { loadConfig, mergeConfig } from '../../config/loader.js';
import type { Cradle } from '../../kernel/container.js';
import type { Kernel } from '../../kernel/kernel.js';
import { silentLogger, type Logger } from '../../kernel/logger.js';
import type { Plugin } from '../../kernel/plugin.js';
import type { Clock, IdGenerator } from '../../kernel/clock.js';
import type { Principal } from '../../kernel/ports/services.port.js';

export const TEST_JWT_SECRET = 'test-secret-0123456789abcdef';

export interface BootOptions {
  /** Enabled plugins (default: the core: auth, users, groups, chat). */
  plugins?: string[];
  /** Port slot -> implementation (default: storage = memory, nothing else). */
  adapters?: Record<string, string>;
  /** Extra config sections, merged over the defaults. */
  config?: Record<string, unknown>;
  extraUnits?: Plugin<unknown>[];
  logger?: Logger;
  clock?: Clock;
  ids?: IdGenerator;
  /** Do not start (to test start failures). */
  noStart?: boolean;
}

export interface Booted {
  kernel: Kernel;
  /** The container's cradle: typed access to everything registered. */
  c: Cradle;
}

/** One line to boot a kernel for a test; stopped by t.teardown. Environment variables are ignored. */
export async function bootKernel(t: Test, opts: BootOptions = {}): Promise<Booted> {
  const config = loadConfig({
    env: {},
    overrides: mergeConfig(
      {
        log: { level: 'silent' },
        plugins: opts.plugins ?? ['auth', 'users', 'groups', 'chat'],
        adapters: opts.adapters ?? { storage: 'memory' },
        auth: { jwtSecret: TEST_JWT_SECRET },
        chat: { rateLimit: { points: 0 } },
      },
      opts.config ?? {},
    ),
  });
  // adapters and plugins replace the defaults wholesale
  config.adapters = opts.adapters ?? { storage: 'memory' };
  const kernel = await composeKernel({ config, logger: opts.logger ?? silentLogger, clock: opts.clock, ids: opts.ids, extraUnits: opts.extraUnits });
  t.teardown(() => kernel.stop());
  if (!opts.noStart) await kernel.start();
  return { kernel, c: kernel.container.cradle };
}

export const admin: Principal = { user_id: 'admin', admin: true };
export const as = (user_id: string): Principal => ({ user_id, admin: false });

/** Creates users (role by id prefix: doc* DOCTOR, ai* AI_ASSISTANT, else PATIENT) and a group with them. */
export async function seedGroup(c: Cradle, groupId: string, userIds: string[]): Promise<void> {
  for (const id of userIds) {
    const role = id.startsWith('doc') ? 'DOCTOR' : id.startsWith('ai') ? 'AI_ASSISTANT' : 'PATIENT';
    const existing = await c.storage.users.get(id);
    if (!existing) await c.userService.create(admin, { user_id: id, username: id, user_role: role });
  }
  await c.groupService.create(admin, { group_id: groupId, group_name: groupId, members: userIds });
}

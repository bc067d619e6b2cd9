import { createContainer, InjectionMode, type AwilixContainer } from 'awilix';
import type { MessageBus } from './bus.js';
import type { Clock, IdGenerator } from './clock.js';
import type { Logger } from './logger.js';
import type { Storage } from './ports/storage.port.js';
import type { AiProvider } from './ports/ai-provider.port.js';
import type { AuthService, ChatService, GroupService, UserService } from './ports/services.port.js';

/**
 * What the container holds, by name. The kernel registers the first block;
 * plugins and adapters register the rest. A plugin that provides something new
 * augments this interface from its own folder:
 *   declare module '../../kernel/container.js' { interface Cradle { thing: Thing } }
 */
export interface Cradle {
  logger: Logger;
  bus: MessageBus;
  clock: Clock;
  ids: IdGenerator;
  /** This process's id in a cluster (config `instanceId`, or a generated one). */
  instanceId: string;
  /** The whole validated configuration, for plugins that read shared sections. */
  config: Readonly<Record<string, unknown>>;

  storage: Storage;
  authService: AuthService;
  userService: UserService;
  groupService: GroupService;
  chatService: ChatService;
  /** Filled by the 'ai-provider' adapter slot. */
  aiProvider: AiProvider;
}

export type Container = AwilixContainer<Cradle>;

export function newContainer(): Container {
  return createContainer<Cradle>({ injectionMode: InjectionMode.PROXY, strict: true });
}

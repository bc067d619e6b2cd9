import { asFunction } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { validateOptions } from '../../lib/validate.js';
import { chatOptionsSchema, type ChatOptions } from './chat.schema.js';
import { ChatServiceImpl } from './chat.service.js';

/** Provides `chatService`: send, list and get messages (API.md §3, §4). */
export const chatPlugin = definePlugin<ChatOptions>({
  name: 'chat',
  dependsOn: ['storage'],
  options: (raw) => validateOptions(chatOptionsSchema, raw),
  register({ container, options }) {
    container.register({
      chatService: asFunction(({ storage, clock, ids, bus }) => new ChatServiceImpl({ storage, clock, ids, bus }, options)).singleton(),
    });
  },
});

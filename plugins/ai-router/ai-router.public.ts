/** The ai-router plugin's public surface: what it registers in the container. */
import type { AiRouter } from './ai-router.service.js';
import type { EventLoopDelaySampler } from './load-shedding.js';

export type { AiRouter, EventLoopDelaySampler };

/** The ai_status frame of API.md §5, pushed through the bus event 'group.notify'. */
export interface AiStatusFrame {
  [key: string]: unknown;
  type: 'ai_status';
  group_id: string;
  user_message_id: string;
  status: 'thinking' | 'failed' | 'paused';
  /** Extra (not in API.md): the interaction record, when there is one. */
  record_id?: string;
}

declare module '../../kernel/bus.js' {
  interface BusEvents {
    /**
     * An intake instance (ai-router.role = intake) created a pending interaction record:
     * workers claim at once instead of at their next poll. Relayed by the cluster bus;
     * the poll stays the backstop for a lost event.
     */
    'ai.record.created': { record_id: string; group_id: string };
  }
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when the ai-router plugin is enabled. */
    aiRouter: AiRouter;
    /**
     * Optional: where the router's load shedding reads the event-loop delay. Absent (the
     * normal case), the router measures this process with eventLoopDelaySampler; tests
     * register one they drive by hand.
     */
    aiEventLoopDelay: EventLoopDelaySampler;
    /** Optional: where load shedding reads the users' send p99 (ms). Absent, chatService.recentSendP99Ms; tests register their own. */
    aiSendP99Ms: () => number;
  }
}

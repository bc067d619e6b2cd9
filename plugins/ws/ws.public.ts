/**
 * The ws plugin's public surface: the server -> client frames of API.md §5 and
 * a read-only view of the connection registry (operations, tests).
 */
import type { Member, Message } from '../../kernel/domain.js';
import type { ErrorCode, ErrorDetail } from '../../kernel/errors.js';

export type ServerFrame =
  | { type: 'message'; data: Message }
  | { type: 'ack'; client_msg_id: string; data: Message }
  | { type: 'sync'; group_id: string; data: Message[]; has_more: boolean }
  | {
      type: 'error';
      code: ErrorCode;
      message: string;
      client_msg_id?: string;
      details?: ErrorDetail[];
      retry_after_seconds?: number;
    }
  | { type: 'pong' }
  | { type: 'member_joined' | 'member_left'; data: Member }
  /** Frames pushed through the bus's 'group.notify' (e.g. ai_status), sent as they are. */
  | ({ type: string } & Record<string, unknown>);

/** Read-only view of this instance's WebSocket connections. */
export interface WsConnections {
  /** Open sockets on this instance (of one user when given). */
  count(userId?: string): number;
  /** Sockets currently indexed under the group (members' sockets whose membership is loaded). */
  groupSocketCount(groupId: string): number;
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when the `ws` plugin is enabled. */
    wsConnections: WsConnections;
  }
}

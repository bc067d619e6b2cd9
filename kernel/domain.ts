/** Entities of API.md §3. Field names are snake_case (they match the tables); timestamps are ISO-8601 UTC strings. */
export const USER_ROLES = ['PATIENT', 'DOCTOR', 'AI_ASSISTANT'] as const;
export type UserRole = (typeof USER_ROLES)[number];

export const MSG_TYPES = ['TEXT', 'IMAGE', 'AI_REPLY'] as const;
export type MsgType = (typeof MSG_TYPES)[number];

export interface User {
  user_id: string;
  username: string;
  user_role: UserRole;
  created_at: string;
  updated_at: string;
}

export interface Group {
  group_id: string;
  group_name: string;
  description: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
}

export interface Member {
  group_id: string;
  user_id: string;
  user_role: UserRole;
  joined_at: string;
}

export interface Message {
  message_id: string;
  group_id: string;
  seq: number;
  from_user_id: string;
  msg_type: MsgType;
  msg_content: string;
  client_msg_id: string | null;
  created_at: string;
}

/** 0 = pending, 1 = succeeded, 2 = failed (final, after retries). */
export const AI_STATUS = { PENDING: 0, SUCCEEDED: 1, FAILED: 2 } as const;
export type AiRecordStatus = (typeof AI_STATUS)[keyof typeof AI_STATUS];

export interface AiInteractionRecord {
  record_id: string;
  group_id: string;
  user_message_id: string;
  ai_message_id: string | null;
  ai_service_url: string;
  request_content: string | null;
  response_content: string | null;
  status: AiRecordStatus;
  duration_ms: number | null;
  error_message: string | null;
  attempts: number;
  /** When the next attempt may start (backoff); null = now. */
  next_attempt_at: string | null;
  /** Instance currently working the record, and until when its claim holds. */
  lease_owner: string | null;
  lease_until: string | null;
  created_at: string;
  updated_at: string;
}

import type { Message, User } from '../domain.js';

/** What the AI layer hands a provider for one attempt (API.md §6). */
export interface AiCallInput {
  record_id: string;
  group_id: string;
  message: Message;
  sender: User;
  assistant: User;
  /** The last N messages of the group, ascending seq (the message itself included). */
  history: Message[];
  /** Users appearing in history, by user_id (roles for prompt building). */
  users: ReadonlyMap<string, User>;
}

export interface AiCallResult {
  /** null = the service chose not to reply. */
  reply: string | null;
  /** The request as sent (stored on the record as JSON). */
  request: unknown;
  /** The response as received (stored on the record as JSON). */
  response: unknown;
}

/** A failed attempt. retryable: network errors, timeouts, 5xx, 429; not: other 4xx, malformed answers. */
export class AiCallError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly opts: { status?: number; retryAfterMs?: number; request?: unknown; response?: unknown } = {},
  ) {
    super(message);
    this.name = 'AiCallError';
  }
}

/** The AI provider port: one attempt per call; retries, backoff and breaking are the caller's job. */
export interface AiProvider {
  readonly name: string;
  /** Where calls go (recorded as ai_service_url); empty when not configured. */
  readonly url: string;
  /** False until a URL is configured: the AI layer stays idle. */
  readonly configured: boolean;
  call(input: AiCallInput, signal: AbortSignal): Promise<AiCallResult>;
}

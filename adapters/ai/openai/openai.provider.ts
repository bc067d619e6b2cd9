import type { Message, User } from '../../../kernel/domain.js';
import type { AiCallInput, AiCallResult, AiProvider } from '../../../kernel/ports/ai-provider.port.js';
import { AiCallError } from '../../../kernel/ports/ai-provider.port.js';
import type { AiSection } from '../shared/ai-section.schema.js';
import { httpError, postRaw } from '../shared/http-call.js';

export interface ChatCompletionMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
  name?: string;
}

/** OpenAI `name`: ^[a-zA-Z0-9_-]{1,64}$. */
function safeName(s: string): string {
  const n = s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);
  return n === '' ? 'user' : n;
}

function contentOf(m: Message): string {
  return m.msg_type === 'IMAGE' ? `[image: ${m.msg_content}]` : m.msg_content;
}

/**
 * The chat of API.md §6 as chat-completion messages: system prompt, then the
 * history (PATIENT -> user, AI_ASSISTANT or AI_REPLY -> assistant, DOCTOR ->
 * user named as the doctor: `name` plus a "[Doctor <name>]" prefix).
 */
export function buildChatMessages(input: AiCallInput, systemPrompt: string): ChatCompletionMessage[] {
  const out: ChatCompletionMessage[] = [];
  if (systemPrompt) out.push({ role: 'system', content: systemPrompt });
  const history = input.history.length > 0 ? input.history : [input.message];
  for (const m of history) {
    const u: User | undefined = input.users.get(m.from_user_id) ?? (m.from_user_id === input.sender.user_id ? input.sender : undefined);
    const role = u?.user_role;
    if (m.msg_type === 'AI_REPLY' || role === 'AI_ASSISTANT') {
      out.push({ role: 'assistant', content: contentOf(m) });
    } else if (role === 'DOCTOR') {
      const name = u?.username ?? m.from_user_id;
      out.push({ role: 'user', name: safeName(`doctor_${name}`), content: `[Doctor ${name}] ${contentOf(m)}` });
    } else {
      out.push({ role: 'user', name: safeName(u?.username ?? m.from_user_id), content: contentOf(m) });
    }
  }
  return out;
}

/** Provider `openai`: POST {ai.url}/chat/completions {model, messages}; reply = choices[0].message.content. */
export class OpenAiProvider implements AiProvider {
  readonly name = 'openai';

  constructor(private readonly opts: AiSection) {}

  get url(): string {
    return this.opts.url === '' ? '' : `${this.opts.url.replace(/\/+$/, '')}/chat/completions`;
  }

  get configured(): boolean {
    return this.opts.url !== '';
  }

  async call(input: AiCallInput, signal: AbortSignal): Promise<AiCallResult> {
    if (!this.configured) throw new AiCallError('AI service not configured (ai.url is empty)', false);
    const request = { model: this.opts.model, messages: buildChatMessages(input, this.opts.systemPrompt) };
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
      'idempotency-key': input.record_id,
    };
    if (this.opts.apiKey) headers.authorization = `Bearer ${this.opts.apiKey}`;
    const res = await postRaw(this.url, JSON.stringify(request), headers, signal, request);
    if (!res.ok) throw httpError(res, request);
    const body = res.body as { choices?: Array<{ message?: { content?: unknown } }> } | null;
    const choice = typeof body === 'object' && body !== null && Array.isArray(body.choices) ? body.choices[0] : undefined;
    const content = choice?.message?.content;
    if (!choice || !choice.message || (content !== null && content !== undefined && typeof content !== 'string')) {
      throw new AiCallError('malformed answer: expected choices[0].message.content', false, {
        status: res.status,
        request,
        response: { status: res.status, body: res.body },
      });
    }
    return { reply: typeof content === 'string' ? content : null, request, response: res.body };
  }
}

import { createHmac } from 'node:crypto';
import type { AiCallInput, AiCallResult, AiProvider } from '../../../kernel/ports/ai-provider.port.js';
import { AiCallError } from '../../../kernel/ports/ai-provider.port.js';
import type { AiSection } from '../shared/ai-section.schema.js';
import { httpError, postRaw } from '../shared/http-call.js';

/** `sha256=<hex>`: HMAC-SHA256 of "{timestamp}.{raw body}" (API.md §6). */
export function signWebhookBody(secret: string, timestamp: number | string, rawBody: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex')}`;
}

/** Provider `webhook`: POST {ai.url} with the body of API.md §6; answer 200 {"reply": "text"|null}. */
export class WebhookAiProvider implements AiProvider {
  readonly name = 'webhook';

  constructor(
    private readonly opts: AiSection,
    private readonly nowSeconds: () => number = () => Math.floor(Date.now() / 1000),
  ) {}

  get url(): string {
    return this.opts.url;
  }

  get configured(): boolean {
    return this.opts.url !== '';
  }

  async call(input: AiCallInput, signal: AbortSignal): Promise<AiCallResult> {
    if (!this.configured) throw new AiCallError('AI service not configured (ai.url is empty)', false);
    const request = {
      record_id: input.record_id,
      group_id: input.group_id,
      message: input.message,
      sender: input.sender,
      assistant: input.assistant,
      history: input.history,
    };
    const raw = JSON.stringify(request);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
      'idempotency-key': input.record_id,
    };
    if (this.opts.apiKey) headers.authorization = `Bearer ${this.opts.apiKey}`;
    if (this.opts.webhookSecret) {
      const ts = this.nowSeconds();
      headers['x-im-timestamp'] = String(ts);
      headers['x-im-signature'] = signWebhookBody(this.opts.webhookSecret, ts, raw);
    }
    const res = await postRaw(this.opts.url, raw, headers, signal, request);
    if (!res.ok) throw httpError(res, request);
    const body = res.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body) || !('reply' in body)) {
      throw new AiCallError('malformed answer: expected a JSON object with a "reply" field', false, {
        status: res.status,
        request,
        response: { status: res.status, body },
      });
    }
    const reply = (body as { reply: unknown }).reply;
    if (reply !== null && typeof reply !== 'string') {
      throw new AiCallError('malformed answer: "reply" must be a string or null', false, { status: res.status, request, response: body });
    }
    return { reply, request, response: body };
  }
}

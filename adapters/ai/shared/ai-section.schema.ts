import { asValue } from 'awilix';
import Joi from 'joi';
import { definePlugin, type Plugin } from '../../../kernel/plugin.js';
import type { AiProvider } from '../../../kernel/ports/ai-provider.port.js';
import { validateOptions } from '../../../lib/validate.js';

/**
 * The shared `ai` config section (API.md §8: IM_AI_URL, IM_AI_API_KEY,
 * IM_AI_MODEL, IM_AI_WEBHOOK_SECRET). Read by the 'ai-provider' adapter; the
 * routing, retry and breaker settings live in the `ai-router` section.
 */
export interface AiSection {
  /** Webhook URL, or the base URL of an OpenAI-compatible server (…/v1). Empty = not configured (AI layer idle). */
  url: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey: string;
  /** Model name (openai provider). */
  model: string;
  /** When set, webhook requests carry X-IM-Timestamp and X-IM-Signature. */
  webhookSecret: string;
  /** System prompt (openai provider). */
  systemPrompt: string;
}

export const DEFAULT_SYSTEM_PROMPT =
  'You are the AI assistant of a medical consultation group chat between a patient and their doctors. ' +
  'Answer the patient briefly and clearly, never give a diagnosis, and advise contacting a doctor or emergency services when in doubt.';

export const aiSectionSchema = Joi.object<AiSection>({
  url: Joi.string().uri({ scheme: ['http', 'https'] }).allow('').default(''),
  apiKey: Joi.string().allow('').default(''),
  model: Joi.string().min(1).default('gpt-4o-mini'),
  webhookSecret: Joi.string().allow('').default(''),
  systemPrompt: Joi.string().allow('').default(DEFAULT_SYSTEM_PROMPT),
});

/** The 'ai-provider' slot's adapter for one provider: settings from the shared `ai` section. */
export function defineAiProviderAdapter(impl: string, create: (options: AiSection) => AiProvider): Plugin<AiSection> {
  return definePlugin<AiSection>({
    name: 'ai-provider',
    kind: 'adapter',
    impl,
    options: (_raw, config) => {
      try {
        return validateOptions(aiSectionSchema, config.ai ?? {});
      } catch (err) {
        throw new Error(`ai.${(err as Error).message}`);
      }
    },
    register({ container, options }) {
      container.register({ aiProvider: asValue(create(options)) });
    },
  });
}

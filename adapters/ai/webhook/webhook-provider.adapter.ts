import { asValue } from 'awilix';
import { definePlugin } from '../../../kernel/plugin.js';
import { validateOptions } from '../../../lib/validate.js';
import { aiSectionSchema, type AiSection } from '../shared/ai-section.schema.js';
import { WebhookAiProvider } from './webhook.provider.js';

/** Fills the 'ai-provider' slot with the webhook contract of API.md §6 (settings: the shared `ai` section). */
export const webhookAiProviderAdapter = definePlugin<AiSection>({
  name: 'ai-provider',
  kind: 'adapter',
  impl: 'webhook',
  options: (_raw, config) => {
    try {
      return validateOptions(aiSectionSchema, config.ai ?? {});
    } catch (err) {
      throw new Error(`ai.${(err as Error).message}`);
    }
  },
  register({ container, options }) {
    container.register({ aiProvider: asValue(new WebhookAiProvider(options)) });
  },
});

import { defineAiProviderAdapter } from '../shared/ai-section.schema.js';
import { WebhookAiProvider } from './webhook.provider.js';

/** Fills the 'ai-provider' slot with the webhook contract of API.md §6 (settings: the shared `ai` section). */
export const webhookAiProviderAdapter = defineAiProviderAdapter('webhook', (options) => new WebhookAiProvider(options));

import { defineAiProviderAdapter } from '../shared/ai-section.schema.js';
import { OpenAiProvider } from './openai.provider.js';

/** Fills the 'ai-provider' slot with any OpenAI-compatible /chat/completions server (settings: the shared `ai` section). */
export const openAiProviderAdapter = defineAiProviderAdapter('openai', (options) => new OpenAiProvider(options));

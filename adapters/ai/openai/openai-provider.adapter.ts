import { asValue } from 'awilix';
import { definePlugin } from '../../../kernel/plugin.js';
import { validateOptions } from '../../../lib/validate.js';
import { aiSectionSchema, type AiSection } from '../shared/ai-section.schema.js';
import { OpenAiProvider } from './openai.provider.js';

/** Fills the 'ai-provider' slot with any OpenAI-compatible /chat/completions server (settings: the shared `ai` section). */
export const openAiProviderAdapter = definePlugin<AiSection>({
  name: 'ai-provider',
  kind: 'adapter',
  impl: 'openai',
  options: (_raw, config) => {
    try {
      return validateOptions(aiSectionSchema, config.ai ?? {});
    } catch (err) {
      throw new Error(`ai.${(err as Error).message}`);
    }
  },
  register({ container, options }) {
    container.register({ aiProvider: asValue(new OpenAiProvider(options)) });
  },
});

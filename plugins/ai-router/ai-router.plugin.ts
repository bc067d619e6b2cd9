import { asFunction } from 'awilix';
import type { Cradle } from '../../kernel/container.js';
import { Counter, Gauge, Histogram } from 'prom-client';
import { definePlugin } from '../../kernel/plugin.js';
import { metricRegistries } from '../../lib/metrics.js';
import { validateOptions } from '../../lib/validate.js';
import { chatOptionsSchema } from '../chat/chat.schema.js';
import { HTTP_ROUTES } from '../http/http.public.js';
import './ai-router.public.js';
import { aiRoutes } from './ai-router.routes.js';
import { aiRouterOptionsSchema, type AiRouterOptions } from './ai-router.schema.js';
import { AiRouter } from './ai-router.service.js';

/** The section's settings, and the chat's limit on msg_content read with them (once, at start-up). */
type AiRouterPluginOptions = AiRouterOptions & { readonly chatMaxContentLength: number };

/**
 * The AI layer (API.md §6): forwards patients' messages to the AI service of
 * the 'ai-provider' adapter and posts its replies through chatService. Idle
 * (no subscription, no timers) while no provider URL is configured (except as
 * an `intake`, which makes no call). `ai-router.role` splits record creation
 * (`intake`) from the AI calls (`worker`) between processes. The core never
 * imports this plugin; it only reacts to bus events.
 */
export const aiRouterPlugin = definePlugin<AiRouterPluginOptions>({
  name: 'ai-router',
  dependsOn: ['storage', 'chat'],
  after: ['ai-provider', 'metrics'],
  options: (raw, config) => {
    const options = validateOptions(aiRouterOptionsSchema, raw);
    // The chat's section, validated as the chat plugin validates it.
    const max = validateOptions(chatOptionsSchema, config.chat ?? {}).maxContentLength;
    if (options.replyTruncationMarker.length >= max) {
      throw new Error(`replyTruncationMarker: must be shorter than chat.maxContentLength (${max})`);
    }
    return { ...options, chatMaxContentLength: max };
  },
  register({ container, contributions, options, logger }) {
    container.register({
      aiRouter: asFunction((c: Cradle) => {
        const registers = metricRegistries(container);
        const metrics = {
          calls: new Counter({
            name: 'im_ai_calls_total',
            help: 'AI service attempts by outcome (succeeded, error = retryable failure, rejected = non-retryable answer)',
            labelNames: ['outcome'] as const,
            registers,
          }),
          latency: new Histogram({
            name: 'im_ai_call_duration_seconds',
            help: 'AI service attempt latency',
            labelNames: ['outcome'] as const,
            buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
            registers,
          }),
          concurrencyLimit: new Gauge({
            name: 'im_ai_concurrency_limit',
            help: 'AI records worked at once that load shedding allows now (ai-router.concurrency unless the event loop is delayed)',
            registers,
          }),
          eventLoopDelay: new Gauge({
            name: 'im_ai_event_loop_delay_seconds',
            help: 'Event-loop delay (p99 of the last load-shedding interval) that drives the AI concurrency limit',
            registers,
          }),
          intakeDeferred: new Counter({
            name: 'im_ai_intake_deferred_total',
            help: 'Stored messages left to the next poll\'s rescan instead of being recorded at once (intake over its limit)',
            registers,
          }),
          recordsCreated: new Counter({
            name: 'im_ai_records_created_total',
            help: 'Interaction records created by this instance (roles all and intake; 0 on a worker)',
            registers,
          }),
          role: new Gauge({
            name: 'im_ai_router_role',
            help: 'This instance\'s ai-router.role (1 for the role it runs: all, intake or worker)',
            labelNames: ['role'] as const,
            registers,
          }),
          repliesTruncated: new Counter({
            name: 'im_ai_replies_truncated_total',
            help: 'AI replies longer than chat.maxContentLength, posted cut to fit with ai-router.replyTruncationMarker (the full reply is in the record\'s response_content)',
            registers,
          }),
        };
        metrics.role.set({ role: options.role }, 1);
        return new AiRouter(
          {
            storage: c.storage,
            chatService: c.chatService,
            bus: c.bus,
            clock: c.clock,
            ids: c.ids,
            instanceId: c.instanceId,
            logger,
            maxContentLength: options.chatMaxContentLength,
            provider: container.hasRegistration('aiProvider') ? c.aiProvider : null,
            metrics,
            ...(container.hasRegistration('aiEventLoopDelay') ? { eventLoopDelay: c.aiEventLoopDelay } : {}),
            ...(container.hasRegistration('aiSendP99Ms') ? { sendP99Ms: c.aiSendP99Ms } : {}),
          },
          options,
        );
      }).singleton(),
    });
    for (const route of aiRoutes(() => container.cradle)) contributions.add(HTTP_ROUTES, route);
  },
  async start({ container }) {
    container.resolve('aiRouter').start();
  },
  async stop({ container }) {
    if (container.hasRegistration('aiRouter')) await container.resolve('aiRouter').stop();
  },
});

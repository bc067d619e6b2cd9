import { asFunction, asValue } from 'awilix';
import { Counter, Gauge, Histogram } from 'prom-client';
import { definePlugin } from '../../kernel/plugin.js';
import { metricRegistries } from '../../lib/metrics.js';
import { validateOptions } from '../../lib/validate.js';
import '../http/http.public.js';
import { WsHub, type WsMetrics } from './ws-hub.service.js';
import { WsServer } from './ws-server.service.js';
import { wsOptionsSchema, type WsOptions } from './ws.schema.js';
import type { WsConnections } from './ws.public.js';

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Internal to the ws plugin. */
    wsServer: WsServer;
  }
}

/**
 * WebSocket transport (API.md §5): `GET /ws/{user_id}` on the http plugin's
 * server and port. Pushes every stored message, membership change and
 * group notification (local or relayed by the cluster bus) to the sockets of
 * the group's members; handles send / sync / ping frames.
 */
export const wsPlugin = definePlugin<WsOptions>({
  name: 'ws',
  dependsOn: ['http', 'auth', 'groups', 'chat'],
  after: ['cluster', 'metrics'],
  options: (raw) => validateOptions(wsOptionsSchema, raw),
  register({ container, options, logger }) {
    const registers = metricRegistries(container);
    const metrics: WsMetrics | null =
      registers.length === 0
        ? null
        : {
            connections: new Gauge({ name: 'im_ws_connections', help: 'Open WebSocket connections on this instance', registers }),
            framesSent: new Counter({
              name: 'im_ws_frames_sent_total',
              help: 'WebSocket frames written to clients, by frame type',
              labelNames: ['type'] as const,
              registers,
            }),
            fanoutLatency: new Histogram({
              name: 'im_ws_fanout_latency_seconds',
              help: "Time from a message's created_at to its frame being written to the group's sockets",
              buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
              registers,
            }),
            slowDisconnects: new Counter({
              name: 'im_ws_slow_disconnects_total',
              help: 'Sockets terminated because their unsent output passed ws.maxBufferedBytes',
              registers,
            }),
          };
    const hub = new WsHub({ maxBufferedBytes: options.maxBufferedBytes }, logger, metrics);
    container.register({
      wsConnections: asValue<WsConnections>(hub),
      wsServer: asFunction(
        ({ koaApp, httpServer, bus, authService, chatService, groupService }) =>
          new WsServer({ koaApp, httpServer, bus, authService, chatService, groupService, logger }, options, hub),
      ).singleton(),
    });
  },
  async start({ container }) {
    container.resolve('wsServer').start();
  },
  async stop({ container }) {
    await container.resolve('wsServer').stop();
  },
});

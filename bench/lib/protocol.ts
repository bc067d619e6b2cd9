import type { HistogramJson } from './hist.js';

/** Which server a load generator talks to: our service and the ws peer speak API.md §5 frames; the Socket.IO peer speaks events. */
export type ClientKind = 'ws' | 'socketio';

export interface ConnectCmd {
  cmd: 'connect';
  kind: ClientKind;
  /** http://127.0.0.1:<port> */
  baseUrl: string;
  users: string[];
  /** HS256 secret to sign each user's token (the service); absent for peers. */
  secret?: string;
  concurrency: number;
  /** Wait for a pong (ws) / ready event (socketio) on every socket before answering. */
  handshake: boolean;
}

export interface Sender {
  user_id: string;
  group_id: string;
  /** Connected members of the group that must receive each message. */
  expected: number;
}

export interface WsStepCmd {
  cmd: 'wsStep';
  rate: number;
  durationMs: number;
  drainMs: number;
  senders: Sender[];
  /** Where sends go: over the sender's socket, or published to a broker. */
  via: 'socket' | 'amqp' | 'nats';
  brokerUrl?: string;
  subject?: string;
  /** Expect an ack frame per send (socket sends only). */
  acks: boolean;
}

export interface HttpStepCmd {
  cmd: 'httpStep';
  baseUrl: string;
  secret: string;
  mode: 'send' | 'list';
  rate: number;
  durationMs: number;
  drainMs: number;
  maxSockets: number;
  /** send: one entry per user (its group); list: readers with the newest seq of their group. */
  users: { user_id: string; group_id: string; maxSeq?: number }[];
}

export interface CloseCmd {
  cmd: 'close';
}

export interface StatsCmd {
  cmd: 'stats';
}

export type LoadgenCmd = ConnectCmd | WsStepCmd | HttpStepCmd | CloseCmd | StatsCmd;

export interface ConnectResult {
  connected: number;
  failed: number;
  firstError?: string;
  ms: number;
  total: number;
}

export interface StepResult {
  rate: number;
  durationMs: number;
  sent: number;
  /** sends actually issued per second over the send window */
  achievedRate: number;
  expectedDeliveries: number;
  deliveries: number;
  duplicates: number;
  /** frames of earlier steps that arrived during this one */
  late: number;
  /** messages not received by every member before the drain deadline */
  incomplete: number;
  acks: number;
  aiReplies: number;
  errors: Record<string, number>;
  firstError?: string;
  latency: HistogramJson;
  ackLatency: HistogramJson;
  /** loadgen event-loop lag p99 in ms over the step (high = loadgen-bound) */
  loadgenLagP99Ms: number;
  /** Longest event-loop stall of the load generator during the step (ms). */
  loadgenLagMaxMs: number;
  wallMs: number;
}

export type LoadgenReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/**
 * JetStream helpers shared by the NATS broker plugins (nats-ingress consumes
 * a stream, nats-egress publishes into one): making sure the stream is there.
 */
import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../kernel/logger.js';

/** True when `err` is the JetStream API's answer `code` (e.g. JetStreamApiCodes.StreamNotFound). */
export function isJetStreamApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** The stream a plugin works with, and whether it may create it. */
export interface StreamSpec {
  name: string;
  /** Subjects the stream captures when this plugin creates it. */
  subjects: string[];
  /** Create the stream (file storage) when it does not exist. */
  create: boolean;
  /** The setting that allows creating it, named in the error (`jetstream.createStream`). */
  createSetting: string;
}

/** The stream does not exist and the plugin may not create it. */
export class NatsStreamMissingError extends Error {
  readonly stream: string;
  constructor(spec: StreamSpec) {
    super(`nats stream '${spec.name}' does not exist: create it (subjects ${spec.subjects.map((s) => `'${s}'`).join(', ')}) or set ${spec.createSetting}: true`);
    this.name = 'NatsStreamMissingError';
    this.stream = spec.name;
  }
}

/**
 * Checks that the stream exists; creates it when missing and allowed, else
 * throws NatsStreamMissingError. Other failures (JetStream not enabled, a
 * timeout) are thrown as they are. Returns the manager it used.
 */
export async function ensureStream(nc: NatsConnection, spec: StreamSpec, logger: Logger): Promise<JetStreamManager> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(spec.name);
  } catch (err) {
    if (!isJetStreamApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    if (!spec.create) throw new NatsStreamMissingError(spec);
    await jsm.streams.add({ name: spec.name, subjects: spec.subjects, storage: StorageType.File });
    logger.info({ stream: spec.name, subjects: spec.subjects }, 'nats stream created');
  }
  return jsm;
}

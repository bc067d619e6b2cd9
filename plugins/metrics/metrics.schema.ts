import { isIP } from 'node:net';
import Joi from 'joi';

/** Options of the `metrics` plugin (config section `metrics`). */
export interface MetricsOptions {
  /** Path of the Prometheus endpoint. */
  path: string;
  /**
   * Client addresses allowed to read the endpoint: IPs or CIDR blocks
   * (`10.0.0.0/8`, `::1`, `fd00::/8`), matched against the TCP peer address
   * (X-Forwarded-For is ignored). Empty = anyone (API.md §4 default).
   */
  allow: string[];
  /** When set, the endpoint also requires `Authorization: Bearer <token>`. */
  token?: string;
  /** Collect prom-client's default Node process metrics. */
  defaultMetrics: boolean;
  /** Name prefix for the default process metrics (e.g. `im_`). */
  defaultMetricsPrefix: string;
  /** Buckets (seconds) of the HTTP request duration histogram. */
  httpBuckets: number[];
  /** Leave the endpoint out of /openapi.json. */
  hideFromOpenApi: boolean;
}

/** `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `v6/n`. */
export function parseCidr(value: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address, prefixText, ...rest] = value.split('/');
  if (rest.length > 0 || !address) return null;
  const version = isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText)) return null;
    prefix = Number(prefixText);
    if (prefix > max) return null;
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

const cidr = Joi.string().custom((value: string, helpers) => (parseCidr(value) ? value : helpers.error('any.invalid')), 'IP or CIDR block');

export const metricsOptionsSchema = Joi.object<MetricsOptions>({
  path: Joi.string().pattern(/^\/[A-Za-z0-9/_.-]*$/).default('/metrics'),
  allow: Joi.array().items(cidr).default([]),
  token: Joi.string().min(16),
  defaultMetrics: Joi.boolean().default(true),
  defaultMetricsPrefix: Joi.string().pattern(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/).allow('').default(''),
  httpBuckets: Joi.array().items(Joi.number().positive()).min(1).default([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  hideFromOpenApi: Joi.boolean().default(false),
});

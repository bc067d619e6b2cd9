import type { Registry } from 'prom-client';
import type { Container } from '../kernel/container.js';

declare module '../kernel/container.js' {
  interface Cradle {
    /** prom-client registry of this kernel (present when the `metrics` plugin is enabled). */
    metricsRegistry: Registry;
  }
}

/**
 * The registries a plugin should register its metrics in: this kernel's one
 * when the metrics plugin is enabled, none otherwise (metrics then cost nothing
 * to export). Never the global registry: two kernels may share a process.
 * Plugins that emit metrics declare `after: ['metrics']`.
 */
export function metricRegistries(container: Container): Registry[] {
  return container.hasRegistration('metricsRegistry') ? [container.resolve('metricsRegistry')] : [];
}

import { createHistogram } from 'node:perf_hooks';

/**
 * Where the router reads how late the event loop runs. The default measures
 * this process (`eventLoopDelaySampler`); tests register their own as
 * `aiEventLoopDelay` in the container and set the value by hand.
 */
export interface EventLoopDelaySampler {
  /** The event loop's delay (ms) since the previous call; 0 when nothing was measured. */
  sample(): number;
  /** Stops measuring (the router calls it on stop for a sampler it created). */
  close?(): void;
}

/** Tick of the default sampler (ms). */
const RESOLUTION_MS = 10;

/**
 * The default sampler: an unref'ed 10 ms timer records how late each tick
 * runs (µs, in a perf_hooks histogram); each `sample()` returns the p99 of the
 * ticks since the previous call and starts a new interval. About 100 timer
 * callbacks a second. Not `monitorEventLoopDelay`: its `reset()` also drops the
 * tick in progress, so a block that starts right after a reading (the work of
 * the same loop turn) would never be seen; here each tick is measured from the
 * previous one whatever the readings.
 */
export function eventLoopDelaySampler(): EventLoopDelaySampler {
  const histogram = createHistogram();
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    histogram.record(Math.max(1, Math.round((now - last - RESOLUTION_MS) * 1000)));
    last = now;
  }, RESOLUTION_MS);
  timer.unref();
  return {
    sample(): number {
      const ms = histogram.count > 0 ? histogram.percentile(99) / 1000 : 0;
      histogram.reset();
      return ms;
    },
    close(): void {
      clearInterval(timer);
    },
  };
}

/** The lowest limit: one record at a time, so forwarding never stops altogether. */
export const MIN_LIMIT = 1;

/**
 * An AIMD limit between MIN_LIMIT and `max`: each evaluation that finds the
 * process overloaded halves it, each that does not raises it by `step` (5 % of
 * `max`, at least 1: from the floor back to `max` in about 20 intervals
 * whatever `max` is).
 */
export class AdaptiveLimit {
  private current: number;
  readonly step: number;

  constructor(readonly max: number) {
    this.current = max;
    this.step = Math.max(1, Math.ceil(max / 20));
  }

  get value(): number {
    return this.current;
  }

  /** One evaluation: halved when overloaded, else raised by `step`; returns the new limit. */
  next(overloaded: boolean): number {
    this.current = overloaded ? Math.max(MIN_LIMIT, Math.floor(this.current / 2)) : Math.min(this.max, this.current + this.step);
    return this.current;
  }
}

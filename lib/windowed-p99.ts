import { createHistogram } from 'node:perf_hooks';

/**
 * The p99 of durations recorded in fixed windows: `last()` answers for the
 * last complete window (so every reader sees the same figure, however often
 * it asks), 0 when that window recorded nothing. Recording is O(1) into a
 * perf_hooks histogram (µs); a window is closed lazily by the next record or read.
 */
export class WindowedP99 {
  private current = createHistogram();
  private windowStart: number;
  private lastP99Ms = 0;
  private lastCount = 0;

  constructor(
    private readonly windowMs: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.windowStart = nowMs();
  }

  record(ms: number): void {
    this.roll();
    this.current.record(Math.max(1, Math.round(ms * 1000)));
  }

  /** p99 (ms) and number of durations of the last complete window. */
  last(): { p99Ms: number; count: number } {
    this.roll();
    return { p99Ms: this.lastP99Ms, count: this.lastCount };
  }

  private roll(): void {
    const now = this.nowMs();
    const elapsed = now - this.windowStart;
    if (elapsed < this.windowMs) return;
    // the window that just ended is the last complete one only if no whole window passed since
    const justEnded = elapsed < 2 * this.windowMs && this.current.count > 0;
    this.lastCount = justEnded ? this.current.count : 0;
    this.lastP99Ms = justEnded ? this.current.percentile(99) / 1000 : 0;
    this.current.reset();
    this.windowStart = now - (elapsed % this.windowMs);
  }
}

/**
 * Latency histogram in microseconds with ~1 % resolution (log buckets), cheap
 * enough to record every delivery. Mergeable across processes (plain arrays).
 */
const BASE = Math.log(1.01);
const SIZE = 2400; // 1.01^2400 µs ≈ 2.3e10 µs: beyond any run

export class Histogram {
  readonly counts: Float64Array;
  n = 0;
  max = 0;
  sum = 0;

  constructor(counts?: number[]) {
    this.counts = new Float64Array(SIZE);
    if (counts) this.merge({ counts, n: 0, max: 0, sum: 0 });
  }

  add(us: number): void {
    const v = us < 1 ? 1 : us;
    let i = Math.ceil(Math.log(v) / BASE);
    if (i >= SIZE) i = SIZE - 1;
    this.counts[i]! += 1;
    this.n += 1;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  merge(h: HistogramJson): void {
    for (let i = 0; i < h.counts.length; i++) this.counts[i]! += h.counts[i]!;
    let n = 0;
    for (let i = 0; i < this.counts.length; i++) n += this.counts[i]!;
    this.n = n;
    this.sum += h.sum;
    if (h.max > this.max) this.max = h.max;
  }

  /** Quantile q in [0,1], in microseconds (upper edge of the bucket). */
  quantile(q: number): number {
    if (this.n === 0) return 0;
    const target = q * this.n;
    let acc = 0;
    for (let i = 0; i < this.counts.length; i++) {
      acc += this.counts[i]!;
      if (acc >= target) return Math.min(Math.exp(i * BASE), this.max);
    }
    return this.max;
  }

  summary(): LatencySummary {
    const ms = (us: number): number => Math.round(us / 10) / 100;
    return {
      samples: this.n,
      p50_ms: ms(this.quantile(0.5)),
      p90_ms: ms(this.quantile(0.9)),
      p99_ms: ms(this.quantile(0.99)),
      max_ms: ms(this.max),
      mean_ms: this.n ? ms(this.sum / this.n) : 0,
    };
  }

  toJSON(): HistogramJson {
    // sparse: trailing zeros cut to keep IPC small
    let last = this.counts.length - 1;
    while (last > 0 && this.counts[last] === 0) last--;
    return { counts: Array.from(this.counts.subarray(0, last + 1)), n: this.n, max: this.max, sum: this.sum };
  }
}

export interface HistogramJson {
  counts: number[];
  n: number;
  max: number;
  sum: number;
}

export interface LatencySummary {
  samples: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  mean_ms: number;
}

/**
 * The one clock of the bench: CLOCK_MONOTONIC in microseconds. process.hrtime
 * reads the system-wide monotonic clock, so every process on the machine
 * (senders and receivers in any load-generator process) shares it.
 */
export function nowUs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e6 + ns / 1e3;
}

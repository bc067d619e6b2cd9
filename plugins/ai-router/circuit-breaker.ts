/**
 * A small circuit breaker (closed -> open -> half-open), driven by the caller:
 * `tryAcquire()` before a call, then `success()` or `failure()` (or
 * `release()` when the call did not happen or proves nothing). Opens after
 * `failureThreshold` consecutive failures; after `resetMs` one trial call is
 * let through; its success closes the breaker, its failure reopens it.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

export class CircuitBreaker {
  private stateValue: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;

  constructor(
    private readonly opts: { failureThreshold: number; resetMs: number },
    private readonly now: () => number = Date.now,
    private readonly onChange?: (state: BreakerState) => void,
  ) {}

  get state(): BreakerState {
    if (this.stateValue === 'open' && this.now() - this.openedAt >= this.opts.resetMs) return 'half-open';
    return this.stateValue;
  }

  /** When an open breaker lets the next trial through (ms epoch); 0 when not open. */
  get retryAt(): number {
    return this.stateValue === 'open' ? this.openedAt + this.opts.resetMs : 0;
  }

  /** True when a call may start now (at most one trial at a time once half-open). */
  canCall(): boolean {
    const s = this.state;
    return s === 'closed' || (s === 'half-open' && !this.trialInFlight);
  }

  /** Reserves a call; false when the breaker refuses it. */
  tryAcquire(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'half-open' && !this.trialInFlight) {
      this.set('half-open');
      this.trialInFlight = true;
      return true;
    }
    return false;
  }

  success(): void {
    this.trialInFlight = false;
    this.failures = 0;
    if (this.stateValue !== 'closed') this.set('closed');
  }

  failure(): void {
    const wasTrial = this.trialInFlight;
    this.trialInFlight = false;
    this.failures++;
    if (wasTrial || this.stateValue === 'half-open' || (this.stateValue === 'closed' && this.failures >= this.opts.failureThreshold)) {
      this.openedAt = this.now();
      this.set('open');
    }
  }

  /** The reserved call did not happen (or says nothing about the service's health). */
  release(): void {
    this.trialInFlight = false;
  }

  private set(s: BreakerState): void {
    if (s === this.stateValue) return;
    this.stateValue = s;
    this.onChange?.(s);
  }
}

/** Delay before the next attempt: exponential with jitter, at least the service's Retry-After (capped). */
export function retryDelayMs(
  attemptsDone: number,
  backoff: { baseMs: number; factor: number; maxMs: number; jitter: number },
  retryAfterMs: number | undefined,
  maxRetryAfterMs: number,
  random: () => number = Math.random,
): number {
  const exp = Math.min(backoff.maxMs, backoff.baseMs * backoff.factor ** Math.max(0, attemptsDone - 1));
  const jittered = Math.round(exp * (1 - backoff.jitter * random()));
  const after = retryAfterMs === undefined ? 0 : Math.min(retryAfterMs, maxRetryAfterMs);
  return Math.max(jittered, after);
}

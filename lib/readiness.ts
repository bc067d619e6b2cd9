/**
 * Readiness checks: any plugin or adapter contributes one at READINESS_CHECKS
 * in its register step; /readyz (the http plugin) runs them all, plus storage.ping().
 */
export const READINESS_CHECKS = 'readiness.checks';

export interface ReadinessCheck {
  name: string;
  /** Resolves when ready; throws (any error) when not. */
  check(): Promise<void>;
}

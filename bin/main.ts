import { ENV_MAP, loadConfig } from '../config/loader.js';
import type { RootConfig } from '../config/config.schema.js';
import { KernelError } from '../kernel/errors.js';
import type { Kernel } from '../kernel/kernel.js';
import { silentLogger } from '../kernel/logger.js';
import { composeKernel } from './compose.js';
import { createLogger, type ProcessLogger } from './logger.js';

/**
 * Entry point (`npm start`): config -> kernel -> start, and the process's
 * life cycle, which the kernel never touches (API.md §8):
 * - a bad config or a failed start exits 1 with ONE line on stderr naming the setting;
 * - SIGTERM/SIGINT -> kernel.stop() (transports first: stop accepting, finish
 *   in-flight requests and deliveries, close sockets with 1001), flush the
 *   logs, exit 0; exit 1 when the shutdown deadline passes or stop fails;
 * - a second signal exits 1 at once.
 */

/** One line for stderr: the setting, and the environment variable that set it when there is one. */
export function oneLine(err: unknown, env: NodeJS.ProcessEnv = process.env): string {
  const message = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').trim();
  const line = err instanceof KernelError ? message : `start-up failed: ${message}`;
  // 'http: port: must be a number' (a unit's own section) or 'log.level: ...' / 'plugins: ...' (the root).
  const m = /^(?:([a-z][a-z0-9-]*): )?([A-Za-z][A-Za-z0-9_.-]*):/.exec(message);
  if (!m) return line;
  const candidates = [m[1] ? `${m[1]}.${m[2]}` : '', m[2]!, m[1] ?? ''].filter(Boolean);
  for (const path of candidates) {
    for (const [name, target] of Object.entries(ENV_MAP)) {
      if (target === path && env[name] !== undefined && env[name] !== '') return `${line} (from ${name})`;
    }
    if ((path === 'plugins' || path.startsWith('plugins.')) && env.IM_PLUGINS) return `${line} (from IM_PLUGINS)`;
  }
  for (const path of candidates) {
    const name = Object.entries(ENV_MAP).find(([, target]) => target === path)?.[0];
    if (name) return `${line} (set it in the config file or with ${name})`;
  }
  return line;
}

/** Milliseconds between the first signal and a forced exit 1. */
export function shutdownDeadlineMs(config: RootConfig): number {
  const k = config.kernel;
  return k.shutdownDeadlineMs ?? k.stopTimeoutMs + 10_000;
}

function exitAfterFlush(logger: ProcessLogger | null, code: number): void {
  process.exitCode = code;
  if (!logger) process.exit(code);
  // The flush callback normally comes at once; never let a stuck stdout keep the process alive.
  const fallback = setTimeout(() => process.exit(code), 2_000);
  fallback.unref();
  try {
    logger.flush(() => process.exit(code));
  } catch {
    process.exit(code);
  }
}

async function main(): Promise<void> {
  let config: RootConfig;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`config error: ${oneLine(err)}\n`);
    process.exit(1);
  }
  if (process.argv.includes('--check')) {
    // the config and every enabled unit's settings, checked without starting or connecting anything
    try {
      const checked = await composeKernel({ config, logger: silentLogger });
      checked.checkOptions();
      process.stdout.write(`config ok: ${checked.unitNames.length} units, in start order: ${checked.unitNames.join(', ')}\n`);
      process.exit(0);
    } catch (err) {
      process.stderr.write(`config error: ${oneLine(err)}\n`);
      process.exit(1);
    }
  }
  const logger = createLogger(config.log.level);
  const deadlineMs = shutdownDeadlineMs(config);

  let kernel: Kernel | undefined;
  let started = false;
  let pendingSignal: string | null = null;
  let shuttingDown = false;

  const shutdown = (reason: string, code: number): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    const began = Date.now();
    logger.info({ signal: reason, deadline_ms: deadlineMs }, 'shutting down');
    const deadline = setTimeout(() => {
      logger.error({ deadline_ms: deadlineMs }, 'shutdown deadline passed: exiting');
      exitAfterFlush(logger, 1);
    }, deadlineMs);
    (kernel ? kernel.stop() : Promise.resolve()).then(
      () => {
        clearTimeout(deadline);
        logger.info({ duration_ms: Date.now() - began }, 'stopped');
        exitAfterFlush(logger, code);
      },
      (err: unknown) => {
        clearTimeout(deadline);
        logger.error({ err }, 'stop failed');
        exitAfterFlush(logger, 1);
      },
    );
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown || pendingSignal) {
      logger.warn({ signal }, 'second signal: exiting now');
      exitAfterFlush(logger, 1);
      return;
    }
    if (!started) {
      // Starting: let start finish (each step has its own timeout), then stop; the deadline runs from now.
      pendingSignal = signal;
      logger.info({ signal }, 'signal during start-up: stopping once started');
      setTimeout(() => {
        logger.error({ deadline_ms: deadlineMs }, 'shutdown deadline passed during start-up: exiting');
        exitAfterFlush(logger, 1);
      }, deadlineMs).unref();
      return;
    }
    shutdown(signal, 0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const onFatal = (what: string) => (err: unknown): void => {
    logger.fatal({ err }, what);
    if (!started) exitAfterFlush(logger, 1);
    else shutdown(what, 1);
  };
  process.on('uncaughtException', onFatal('uncaught exception'));
  process.on('unhandledRejection', onFatal('unhandled promise rejection'));

  try {
    kernel = await composeKernel({ config, logger });
    await kernel.start();
  } catch (err) {
    const line = oneLine(err);
    logger.fatal({ err }, line);
    process.stderr.write(`${line}\n`);
    await kernel?.stop().catch(() => undefined);
    exitAfterFlush(logger, 1);
    return;
  }
  started = true;
  logger.info({ instance_id: kernel.instanceId, units: kernel.unitNames, shutdown_deadline_ms: deadlineMs }, 'started');
  if (pendingSignal) shutdown(pendingSignal, 0);
}

void main();

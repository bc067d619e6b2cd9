import { KernelError } from '../kernel/errors.js';
import { loadConfig } from '../config/loader.js';
import { composeKernel } from './compose.js';
import { createLogger } from './logger.js';

/** Entry point: config -> kernel -> start; SIGTERM/SIGINT stop it cleanly. Only bin/ exits the process. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`config error: ${(err as Error).message}\n`);
    process.exit(1);
  }
  const logger = createLogger(config.log.level);
  let kernel;
  try {
    kernel = await composeKernel({ config, logger });
    await kernel.start();
  } catch (err) {
    const line = err instanceof KernelError ? err.message : `start-up failed: ${(err as Error).message}`;
    logger.fatal({ err }, line);
    process.stderr.write(`${line}\n`);
    await kernel?.stop().catch(() => undefined);
    process.exit(1);
  }
  logger.info({ instance_id: kernel.instanceId, units: kernel.unitNames }, 'started');

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    const deadline = setTimeout(() => {
      logger.error('shutdown deadline passed: exiting');
      process.exit(1);
    }, config.kernel.stopTimeoutMs * 2);
    deadline.unref();
    kernel.stop().then(
      () => {
        logger.info('stopped');
        process.exitCode = 0;
        setImmediate(() => process.exit(0));
      },
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

void main();

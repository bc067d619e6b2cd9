import { asValue } from 'awilix';
import { MessageBus } from './bus.js';
import { newContainer, type Container } from './container.js';
import { systemClock, uuidV7Generator, type Clock, type IdGenerator } from './clock.js';
import { KernelError } from './errors.js';
import type { Logger } from './logger.js';
import type { Contributions, Plugin, PluginContext } from './plugin.js';

export interface KernelOptions {
  units: readonly Plugin<unknown>[];
  config: Readonly<Record<string, unknown>>;
  logger: Logger;
  clock?: Clock;
  ids?: IdGenerator;
  instanceId?: string;
  /** Limit for each register/start step (ms). */
  startTimeoutMs?: number;
  /** Limit for each stop step (ms). */
  stopTimeoutMs?: number;
}

export type KernelState = 'new' | 'starting' | 'started' | 'stopping' | 'stopped' | 'failed';

interface Loaded {
  unit: Plugin<unknown>;
  ctx: PluginContext<unknown>;
}

/**
 * The microkernel: orders units by their dependencies, registers them into one
 * awilix container, starts them in order and stops them in reverse. It never
 * exits the process and installs no signal handlers.
 */
export class Kernel {
  readonly container: Container;
  readonly bus: MessageBus;
  readonly instanceId: string;
  private readonly logger: Logger;
  private readonly order: Plugin<unknown>[];
  private readonly started: Loaded[] = [];
  private readonly loaded: Loaded[] = [];
  private readonly contributionMap = new Map<string, unknown[]>();
  private stateValue: KernelState = 'new';
  private stopping: Promise<void> | null = null;

  constructor(private readonly opts: KernelOptions) {
    this.logger = opts.logger;
    const clock = opts.clock ?? systemClock;
    this.instanceId = opts.instanceId ?? `im-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.order = Kernel.resolveOrder(opts.units);
    this.container = newContainer();
    this.bus = new MessageBus(this.logger.child({ component: 'bus' }), this.instanceId);
    this.container.register({
      logger: asValue(this.logger),
      bus: asValue(this.bus),
      clock: asValue(clock),
      ids: asValue(opts.ids ?? uuidV7Generator(clock)),
      instanceId: asValue(this.instanceId),
      config: asValue(opts.config),
    });
  }

  get state(): KernelState {
    return this.stateValue;
  }

  /** Names in start order. */
  get unitNames(): string[] {
    return this.order.map((u) => u.name);
  }

  /**
   * Topological order (dependencies first; ties keep the given order).
   * Missing dependencies and cycles fail with one line naming them.
   */
  static resolveOrder(units: readonly Plugin<unknown>[]): Plugin<unknown>[] {
    const byName = new Map<string, Plugin<unknown>>();
    for (const u of units) {
      if (byName.has(u.name)) throw new KernelError(`unit '${u.name}' is enabled twice`);
      byName.set(u.name, u);
    }
    for (const u of units) {
      for (const d of u.dependsOn ?? []) {
        if (!byName.has(d)) throw new KernelError(`'${u.name}' depends on '${d}', which is not enabled`);
      }
    }
    const out: Plugin<unknown>[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (u: Plugin<unknown>, path: string[]): void => {
      const s = state.get(u.name);
      if (s === 'done') return;
      if (s === 'visiting') {
        const cycle = [...path.slice(path.indexOf(u.name)), u.name];
        throw new KernelError(`dependency cycle: ${cycle.join(' -> ')}`);
      }
      state.set(u.name, 'visiting');
      const deps = [...(u.dependsOn ?? []), ...(u.after ?? []).filter((n) => byName.has(n))];
      for (const d of deps) visit(byName.get(d)!, [...path, u.name]);
      state.set(u.name, 'done');
      out.push(u);
    };
    for (const u of units) visit(u, []);
    return out;
  }

  /** A unit's options from its config section (its `options()` validator); KernelError `<unit>: <message>` when refused. */
  private optionsOf(unit: Plugin<unknown>): unknown {
    const raw = this.opts.config[unit.name] ?? {};
    try {
      return unit.options ? unit.options(raw, this.opts.config) : raw;
    } catch (err) {
      throw new KernelError(`${unit.name}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * What start() checks before it touches anything, without starting: the
   * order (done by the constructor) and every unit's options. For
   * `main.js --check`: a deployment's config checked without connecting anywhere.
   */
  checkOptions(): void {
    for (const unit of this.order) this.optionsOf(unit);
  }

  async start(): Promise<void> {
    if (this.stateValue !== 'new') throw new KernelError(`kernel cannot start from state '${this.stateValue}'`);
    this.stateValue = 'starting';
    const contributions: Contributions = {
      add: (point, value) => {
        const list = this.contributionMap.get(point) ?? [];
        list.push(value);
        this.contributionMap.set(point, list);
      },
      list: <T>(point: string) => (this.contributionMap.get(point) ?? []) as T[],
    };
    try {
      for (const unit of this.order) {
        const logger = this.logger.child({ plugin: unit.name });
        const options = this.optionsOf(unit);
        const ctx: PluginContext<unknown> = { container: this.container, options, logger, contributions };
        this.loaded.push({ unit, ctx });
        await this.step(unit.name, 'register', async () => unit.register(ctx), this.opts.startTimeoutMs ?? 30_000);
      }
      for (const l of this.loaded) {
        if (l.unit.start) await this.step(l.unit.name, 'start', () => l.unit.start!(l.ctx), this.opts.startTimeoutMs ?? 30_000);
        this.started.push(l);
        this.logger.debug({ plugin: l.unit.name }, 'started');
      }
      this.stateValue = 'started';
    } catch (err) {
      this.stateValue = 'failed';
      await this.stopStarted();
      throw err;
    }
  }

  /** Stops started units in reverse order. Idempotent; concurrent calls share one run. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    if (this.stateValue === 'new') {
      this.stateValue = 'stopped';
      return Promise.resolve();
    }
    this.stateValue = 'stopping';
    this.stopping = this.stopStarted().then(() => {
      this.stateValue = 'stopped';
    });
    return this.stopping;
  }

  private async stopStarted(): Promise<void> {
    while (this.started.length > 0) {
      const l = this.started.pop()!;
      if (!l.unit.stop) continue;
      try {
        await this.step(l.unit.name, 'stop', () => l.unit.stop!(l.ctx), this.opts.stopTimeoutMs ?? 15_000);
      } catch (err) {
        this.logger.error({ err, plugin: l.unit.name }, 'stop failed');
      }
    }
  }

  private async step(name: string, what: string, fn: () => Promise<void>, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KernelError(`${name}: ${what} timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([fn(), timeout]);
    } catch (err) {
      if (err instanceof KernelError) throw err;
      throw new KernelError(`${name}: ${what} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}

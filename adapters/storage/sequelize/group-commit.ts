import { UnavailableError } from '../../../kernel/errors.js';

interface Pending<I, R> {
  item: I;
  resolve(value: R): void;
  reject(err: unknown): void;
}

export interface GroupCommitStats {
  batches: number;
  items: number;
  largestBatch: number;
}

export interface GroupCommitOptions<I, R> {
  maxSize: number;
  /** Batches in flight at once (their transactions overlap: one prepares while another commits). */
  concurrency: number;
  /** Writes the whole batch in one transaction; one result per item, in order. */
  writeBatch(items: I[]): Promise<R[]>;
  /** Writes one item on its own (used to give each caller its own error after a failed batch). */
  writeOne(item: I): Promise<R>;
  /** Errors that mean "store unreachable": the batch fails as a whole, no one-by-one retry. */
  isUnavailable(err: unknown): boolean;
}

/**
 * Group commit: concurrent submit() calls are queued and written by one
 * transaction per batch (at most `maxSize` items, at most `concurrency` batches
 * in flight). While batches commit, new calls queue for the next one, so batches grow with load and the cost of a
 * commit is shared. Each caller gets its own result. When a batch fails for a
 * reason other than unavailability, its items are retried one by one so every
 * caller gets its own outcome; when the store is unreachable every caller of
 * the batch gets the error (the transaction wrote nothing).
 */
export class GroupCommit<I, R> {
  private queue: Pending<I, R>[] = [];
  /** Batches loops running; changed synchronously, so a submit never strands in the queue. */
  private active = 0;
  private idleWaiters: Array<() => void> = [];
  private closed = false;
  readonly stats: GroupCommitStats = { batches: 0, items: 0, largestBatch: 0 };

  constructor(private readonly opts: GroupCommitOptions<I, R>) {}

  submit(item: I): Promise<R> {
    if (this.closed) return Promise.reject(new UnavailableError('storage is stopping'));
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.active < this.opts.concurrency) {
        this.active++;
        void this.work();
      }
    });
  }

  /** Rejects new submissions and waits for queued ones to finish. */
  close(): Promise<void> {
    this.closed = true;
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private async work(): Promise<void> {
    try {
      // Let the calls of this turn of the event loop join the first batch.
      await new Promise<void>((r) => setImmediate(r));
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.opts.maxSize);
        await this.runBatch(batch);
      }
    } finally {
      this.active--;
      if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async runBatch(batch: Pending<I, R>[]): Promise<void> {
    this.stats.batches++;
    this.stats.items += batch.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
    let results: R[];
    try {
      results = await this.opts.writeBatch(batch.map((p) => p.item));
    } catch (err) {
      if (batch.length === 1 || this.opts.isUnavailable(err)) {
        for (const p of batch) p.reject(err);
        return;
      }
      for (const p of batch) {
        try {
          p.resolve(await this.opts.writeOne(p.item));
        } catch (e) {
          p.reject(e);
        }
      }
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]!));
  }
}

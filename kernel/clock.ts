import { randomFillSync } from 'node:crypto';

/** Time source, injectable for tests. */
export interface Clock {
  now(): Date;
  /** ISO-8601 UTC with milliseconds. */
  nowIso(): string;
}

export const systemClock: Clock = {
  now: () => new Date(),
  nowIso: () => new Date().toISOString(),
};

/** Id source, injectable for tests. */
export interface IdGenerator {
  /** A new unique id (UUIDv7: time-ordered, so index inserts stay local). */
  next(): string;
}

export function uuidV7Generator(clock: Clock = systemClock): IdGenerator {
  let lastMs = 0;
  let counter = 0;
  // Random bytes are drawn 4 KiB at a time (one syscall per 256 ids, not one per id).
  const pool = Buffer.alloc(4096);
  let poolOffset = pool.length;
  const random16 = (): Buffer => {
    if (poolOffset + 16 > pool.length) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const b = Buffer.from(pool.subarray(poolOffset, poolOffset + 16));
    poolOffset += 16;
    return b;
  };
  return {
    next(): string {
      let ms = clock.now().getTime();
      if (ms <= lastMs) {
        counter++;
        if (counter > 0xfff) {
          lastMs++;
          counter = 0;
        }
        ms = lastMs;
      } else {
        lastMs = ms;
        counter = 0;
      }
      const b = random16();
      b.writeUIntBE(ms, 0, 6);
      b[6] = 0x70 | ((counter >> 8) & 0x0f);
      b[7] = counter & 0xff;
      b[8] = 0x80 | (b[8] & 0x3f);
      const h = b.toString('hex');
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  };
}

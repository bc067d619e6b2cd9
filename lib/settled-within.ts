/**
 * Waits for `p` to settle (resolved or rejected), `ms` at the most; never
 * rejects. True when it settled in time: bounded waits at shutdown (drains,
 * grace periods) and at start-up (the first connection).
 */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([p.then(yes, yes), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return settled;
}

function yes(): true {
  return true;
}

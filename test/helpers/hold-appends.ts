import type { MessageRepository } from '../../kernel/ports/storage.port.js';

interface TeardownHost {
  teardown(fn: () => void | Promise<void>): void;
}

/**
 * Holds every `append` of `repo` until the returned release() is called (a
 * delivery "in flight": received, not yet committed). The repository gets its
 * own append back at the test's teardown.
 */
export function holdAppends(t: TeardownHost, repo: MessageRepository): () => void {
  const realAppend = repo.append.bind(repo);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  repo.append = async (m) => {
    await gate;
    return realAppend(m);
  };
  t.teardown(() => {
    repo.append = realAppend;
  });
  return release;
}

/** Names of the bench's users and groups; the same on every target. */
export const user = (i: number): string => `bu${i}`;
export const AI_USER = 'bench-ai';

export const S1 = { groups: 10, members: 100, sendersPerGroup: 10, firstUser: 0 };
export const S2 = { groups: 1000, members: 10, firstUser: 1000 };
export const S4 = { groups: 100, firstUser: 11000 };
export const MAX_USERS = 15000;

export function s1Groups(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let g = 0; g < S1.groups; g++) out[`s1g${g}`] = Array.from({ length: S1.members }, (_, j) => user(S1.firstUser + g * S1.members + j));
  return out;
}

export function s2Groups(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let g = 0; g < S2.groups; g++) out[`s2g${g}`] = Array.from({ length: S2.members }, (_, j) => user(S2.firstUser + g * S2.members + j));
  return out;
}

export function s4Groups(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let g = 0; g < S4.groups; g++) out[`s4g${g}`] = [user(S4.firstUser + g)];
  return out;
}

export const usersOf = (groups: Record<string, string[]>): string[] => [...new Set(Object.values(groups).flat())];

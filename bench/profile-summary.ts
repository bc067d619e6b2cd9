/**
 * `node build/bench/profile-summary.js <file.cpuprofile> [top] [--skip S]`:
 * self time per function and per package/folder from a `node --cpu-prof`
 * profile (the harness writes them with `npm run bench -- --profile`), as a
 * share of the busy time (idle left out). `--skip S` leaves out the first S
 * seconds (the set-up: seeding, connecting sockets) so that the figures are
 * the measured steps' own.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const skipAt = args.indexOf('--skip');
const skipS = skipAt >= 0 ? Number(args.splice(skipAt, 2)[1]) : 0;
const file = args[0];
const top = Number(args[1] ?? 25);
if (!file || !Number.isFinite(top) || !(skipS >= 0)) {
  process.stderr.write('usage: profile-summary <file.cpuprofile> [top] [--skip seconds]\n');
  process.exit(2);
}
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
let clock = 0;
let idle = 0;
for (let i = 0; i < p.samples.length; i++) {
  const dt = p.timeDeltas[i] ?? 0;
  clock += dt;
  if (clock < skipS * 1e6) continue;
  if (byId.get(p.samples[i]!)?.callFrame.functionName === '(idle)') {
    idle += dt;
    continue;
  }
  self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
}
const total = [...self.values()].reduce((s, x) => s + x, 0);

function area(url: string): string {
  if (!url) return '(native/idle)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return url;
  const b = url.indexOf('/build/');
  return b >= 0 ? url.slice(b + 7).split('/').slice(0, 2).join('/') : url;
}

const fnTime = new Map<string, number>();
const areaTime = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  const f = `${n.callFrame.functionName || '(anonymous)'} ${area(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  fnTime.set(f, (fnTime.get(f) ?? 0) + t);
  const a = area(n.callFrame.url);
  areaTime.set(a, (areaTime.get(a) ?? 0) + t);
}
const pct = (t: number): string => `${((100 * t) / total).toFixed(1).padStart(5)} %`;
process.stdout.write(
  `busy: ${(total / 1e6).toFixed(1)} s of ${((total + idle) / 1e6).toFixed(1)} s sampled${skipS > 0 ? ` (first ${skipS} s left out)` : ''}; shares are of the busy time\n\nby package/folder:\n`,
);
for (const [a, t] of [...areaTime].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`${pct(t)}  ${a}\n`);
process.stdout.write('\nby function (self time):\n');
for (const [f, t] of [...fnTime].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`${pct(t)}  ${f}\n`);

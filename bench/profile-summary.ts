/**
 * `node build/bench/profile-summary.js <file.cpuprofile> [top]`: self time
 * per function and per package/folder from a `node --cpu-prof` profile
 * (the harness writes them with `npm run bench -- --profile`).
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

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: profile-summary <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
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
process.stdout.write(`total sampled: ${(total / 1e6).toFixed(1)} s\n\nby package/folder:\n`);
for (const [a, t] of [...areaTime].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`${pct(t)}  ${a}\n`);
process.stdout.write('\nby function (self time):\n');
for (const [f, t] of [...fnTime].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`${pct(t)}  ${f}\n`);

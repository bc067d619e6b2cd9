import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bestStep, type ScenarioReport, type StepRecord, type TargetResult } from '../scenarios/common.js';
import type { MachineInfo } from './proc.js';

export interface BenchReport {
  date: string;
  mode: 'quick' | 'full';
  duration_s: number;
  machine: MachineInfo;
  /** CPU steal over the whole run, as a share of all cores (see CpuUsage.stealShare). */
  steal_share?: number;
  settings: Record<string, unknown>;
  scenarios: ScenarioReport[];
  notes: string[];
}

export const fmt = (x: number | null | undefined, d = 0): string => {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: 0 });
};

function figure(r: TargetResult | undefined): string {
  if (!r) return '–';
  if (r.error && !r.figure) return `error: ${r.error.slice(0, 80)}`;
  if (!r.figure && r.steps?.length) {
    const b = bestStep(r.steps)!;
    return `0 (no step passed; best ${fmt(b.deliveries_per_s)}/s delivered at p99 ${fmt(b.latency.p99_ms)} ms)`;
  }
  return `${fmt(r.figure, r.figure < 100 ? 2 : 0)} ${r.unit}`;
}

/** Mean noise share over a result's steps, as a percentage. */
function noise(r: TargetResult | undefined): string {
  if (!r?.steps?.length) return '–';
  const mean = (f: (x: StepRecord) => number): string => fmt((100 * r.steps!.reduce((s, x) => s + f(x), 0)) / r.steps!.length);
  return `${mean((x) => x.cpu.noiseShare)} % (steal ${mean((x) => x.cpu.stealShare ?? 0)} %)`;
}

function perCpu(r: TargetResult | undefined): string {
  if (!r) return '–';
  const k = r.knee ?? bestStep(r.steps);
  if (!k) return '–';
  return `${fmt(k.deliveries_per_server_cpu_s)} (${fmt(k.cpu.cpuSeconds.server ?? 0, 1)} CPU-s)`;
}

function kneeLine(k: StepRecord | null | undefined): string {
  if (!k) return 'no passing step';
  const ack = k.ack_latency ? `, send→ack p99 ${fmt(k.ack_latency.p99_ms, 1)} ms` : '';
  return (
    `p50 ${fmt(k.latency.p50_ms, 1)} / p99 ${fmt(k.latency.p99_ms, 1)} ms${ack}, server ${fmt(k.server_cores, 2)} cores, ` +
    `${fmt(k.deliveries_per_server_cpu_s)} per server CPU-s, load generator ${fmt(k.loadgen_cores, 2)} cores, ` +
    `PostgreSQL ${fmt((k.cpu.cpuSeconds.postgres ?? 0) / Math.max(0.001, k.cpu.wallSeconds), 2)} cores, noise ${fmt(k.cpu.noiseShare * 100)} % (steal ${fmt((k.cpu.stealShare ?? 0) * 100)} %)` +
    (k.cpu.runQueueWaitMsPerS ? `, waiting for a CPU (ms per s): ${Object.entries(k.cpu.runQueueWaitMsPerS).filter(([, v]) => v > 0).map(([r, v]) => `${r} ${fmt(v, 1)}`).join(', ')}` : '')
  );
}

export function toMarkdown(r: BenchReport): string {
  const L: string[] = [];
  L.push(`# Benchmark ${r.date} (${r.mode} run, ${Math.round(r.duration_s)} s, storage ${String(r.settings.storage ?? 'postgres')})`);
  L.push('');
  const m = r.machine;
  L.push(
    `Machine: ${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}, PostgreSQL ${m.postgres}, open files ${m.fdLimit}. ` +
      'Service, load generator, peers and PostgreSQL share these cores.' +
      (r.steal_share === undefined ? '' : ` CPU steal over the run (the host running something else while these vCPUs waited): ${fmt(r.steal_share * 100, 1)} % of the cores' time.`),
  );
  L.push('');
  L.push(
    '| scenario | target | ours | ours per server CPU-s (server CPU-s of the step) | noise (ours) | bare ws | Socket.IO | ours ÷ bare ws | ours ÷ Socket.IO | met |',
  );
  L.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of r.scenarios) {
    const rat = (p: 'bare-ws' | 'socketio'): string => {
      const x = s.ratios?.[p];
      if (!x) return '–';
      return x.per_cpu === null ? `${fmt(x.figure, 2)}×` : `${fmt(x.figure, 2)}× (per CPU-s ${fmt(x.per_cpu, 2)}×)`;
    };
    L.push(
      `| ${s.id} ${s.title} | ${s.target_text} | ${figure(s.results.service)} | ${perCpu(s.results.service)} | ${noise(s.results.service)} | ${figure(s.results['bare-ws'])} | ${figure(s.results.socketio)} | ${rat('bare-ws')} | ${rat('socketio')} | ${s.met === null ? `– ${s.met_note ?? ''}` : s.met ? 'yes' : '**no**'} |`,
    );
  }
  L.push('');
  L.push(
    'Ratios: headline figure, and in brackets deliveries per server CPU-second (which stays comparable when other processes take CPU). ' +
      '"per server CPU-s" counts deliveries (S1, S2, S6, S7) or successful requests (S3, S4) per CPU-second of the server process, at the knee (or the best step when none passed). ' +
      'noise = busy CPU of other processes on the machine, as a share of all cores; steal = time the hypervisor took from this virtual machine\'s vCPUs (ready to run, waiting for the host), as a share of all cores: it delays every process here without showing in their CPU time.',
  );
  L.push('');
  L.push('## Details (at the knee: the highest passing rate)');
  L.push('');
  for (const s of r.scenarios) {
    L.push(`### ${s.id} ${s.title}`);
    for (const [name, res] of Object.entries(s.results)) {
      if (!res) continue;
      L.push(`- **${name}**: ${figure(res)}${res.knee !== undefined ? ` — ${kneeLine(res.knee)}` : ''}`);
      if (res.error) L.push(`  - error: ${res.error}`);
      if (res.extra) L.push(`  - ${Object.entries(res.extra).map(([k, v]) => `${k}: ${typeof v === 'number' ? fmt(v, 2) : String(v)}`).join(', ')}`);
      if (res.steps?.length) {
        L.push(
          `  - steps: ${res.steps
            .map((st) => `${fmt(st.rate)}/s → p99 ${fmt(st.latency.p99_ms, 1)} ms, ${fmt(st.delivery_pct, 2)} % ${st.pass ? '✓' : `✗ (${st.why_not})`}`)
            .join('; ')}`,
        );
      }
    }
    for (const n of s.notes) L.push(`- note: ${n}`);
    L.push('');
  }
  if (r.notes.length) {
    L.push('## Notes');
    for (const n of r.notes) L.push(`- ${n}`);
    L.push('');
  }
  return L.join('\n');
}

export function writeReport(dir: string, r: BenchReport): { json: string; md: string } {
  const stamp = r.date.replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
  const json = join(dir, `${stamp}.json`);
  const md = join(dir, `${stamp}.md`);
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(md, `${toMarkdown(r)}\n`);
  return { json, md };
}

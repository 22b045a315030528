// The smtpsift benchmark (issue 2, extended by issue 7): smtp-source against smtpsiftd,
// the Debian proxsmtpd and smtp-sink itself, all in front of one smtp-sink, in one run.
// Targets are interleaved within each repetition (rotating who goes first), so a slow
// spell of the machine hits all of them; figures are medians with min-max.
//
// Run through bench/run (it builds first). Not a test: nothing here is named like one,
// and `node --test dist/test/` never looks in dist/bench/.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { BARS, BUDGETS, METRICS, SCENARIOS, TARGETS, type Budget, type Figures, type Mode, type Scenario } from './plan.js';
import { RssSampler } from './lib/memory.js';
import { killAllNow, run, stopAll } from './lib/processes.js';
import { probeDotLatency } from './lib/probe.js';
import { Sink, SMTP_SINK } from './lib/sink.js';
import { runSource, SMTP_SOURCE } from './lib/source.js';
import { fmt, fmtSummary, summarize } from './lib/stats.js';
import { alive, logLines, PROXSMTPD, REPO, SMTPSIFTD, startTarget, stopTarget, type RunningTarget, type TargetOptions, type TargetSpec } from './lib/targets.js';

interface Options {
  mode: Mode;
  results: string | undefined;
  only: Set<string> | undefined;
  nodeFlags: string[];
  keep: boolean;
}

const USAGE = `usage: bench/run [--quick] [--results FILE | --no-results] [--only ID,...] [--profile DIR] [--keep]
  --quick        about a minute (fewer, shorter repetitions); writes no results file unless --results
  --results FILE write the Markdown report there (default for a full run: bench/RESULTS.md)
  --no-results   print only
  --only IDS     run only these scenarios (${SCENARIOS.map((s) => s.id).join(', ')})
  --profile DIR  run smtpsiftd under node --cpu-prof, profiles written to DIR at exit
  --keep         keep the run directory (configs, daemon logs)
`;

function parseArgs(argv: string[]): Options {
  const o: Options = { mode: 'full', results: undefined, only: undefined, nodeFlags: [], keep: false };
  let results: string | null | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.mode = 'quick';
    else if (a === '--results') results = value();
    else if (a === '--no-results') results = null;
    else if (a === '--only') o.only = new Set(value().split(','));
    else if (a === '--profile') o.nodeFlags = ['--cpu-prof', `--cpu-prof-dir=${value()}`];
    else if (a === '--keep') o.keep = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  o.results = results === null ? undefined : (results ?? (o.mode === 'full' && o.only === undefined ? join(REPO, 'bench/RESULTS.md') : undefined));
  return o;
}

const say = (m: string): void => void process.stderr.write(`${m}\n`);

/**
 * Where a scenario's figures for a target come from: its own, or for `direct` in a filter
 * scenario, the `directFrom` scenario's when that one is in the run (the same load: direct
 * has no filter), so it is not measured twice.
 */
function source(s: Scenario, label: string, run: readonly Scenario[]): string {
  if (s.kind === 'throughput' && label === 'direct' && s.directFrom !== undefined && run.some((x) => x.id === s.directFrom)) return s.directFrom;
  return s.id;
}

/** The targets a scenario measures itself (not the borrowed ones). */
const measured = (s: Scenario, run: readonly Scenario[]): string[] => s.targets.filter((l) => source(s, l, run) === s.id);

/** samples[scenario][target][metric] = one value per repetition. */
type Samples = Map<string, Map<string, Map<string, number[]>>>;

class Results implements Figures {
  readonly samples: Samples = new Map();
  readonly problems: string[] = [];
  /** Messages per smtp-source run, per scenario and target (set by calibration). */
  readonly counts = new Map<string, number>();

  add(scenario: string, target: string, metric: string, value: number): void {
    const s = this.samples.get(scenario) ?? new Map<string, Map<string, number[]>>();
    this.samples.set(scenario, s);
    const t = s.get(target) ?? new Map<string, number[]>();
    s.set(target, t);
    const m = t.get(metric) ?? [];
    t.set(metric, m);
    m.push(value);
  }

  values(scenario: string, target: string, metric: string): number[] {
    return this.samples.get(scenario)?.get(target)?.get(metric) ?? [];
  }

  median(scenario: string, target: string, metric: string): number | undefined {
    return summarize(this.values(scenario, target, metric))?.median;
  }

  max(scenario: string, target: string, metric: string): number | undefined {
    return summarize(this.values(scenario, target, metric))?.max;
  }
}

class Runner {
  private readonly running = new Map<string, RunningTarget>();
  readonly results = new Results();

  constructor(
    private readonly budget: Budget,
    private readonly sink: Sink,
    private readonly targetOpts: TargetOptions,
  ) {}

  private spec(label: string): TargetSpec {
    const t = TARGETS.find((x) => x.label === label);
    if (t === undefined) throw new Error(`no target ${label}`);
    return t;
  }

  /** The long-running instance of a target, started on first use (and again if it died). */
  private async target(label: string): Promise<RunningTarget> {
    let t = this.running.get(label);
    if (t !== undefined && !alive(t)) {
      this.results.problems.push(`${label} died (status ${t.daemon?.child.exitCode ?? t.daemon?.child.signalCode}); restarted`);
      t = undefined;
    }
    if (t === undefined) {
      t = await startTarget(this.spec(label), this.sink, this.targetOpts);
      this.running.set(label, t);
    }
    return t;
  }

  private problem(s: Scenario, label: string, what: string): void {
    const m = `${s.id} ${label}: ${what}`;
    this.results.problems.push(m);
    say(`  PROBLEM ${m}`);
  }

  /**
   * Sizes the smtp-source runs to take about budget.runSeconds, from two pilot runs (the
   * first, tiny, is mostly start-up and JIT warm-up; the second, half a run long, is used).
   * The first pilot has 2x the concurrency in messages, at least 20.
   */
  async calibrate(s: Scenario & { kind: 'throughput' }, label: string): Promise<void> {
    const t = await this.target(label);
    const c = s.load.concurrency;
    const size = (rate: number, seconds: number): number => Math.min(50_000, Math.max(c, 10, Math.round(rate * seconds)));
    const first = await runSource(s.load, Math.max(2 * c, 20), t.port, this.sink, 120_000);
    if (!first.ok) this.problem(s, label, `calibration: ${first.problem}`);
    // A quick run has no time for the second pilot.
    const second = this.budget.runSeconds < 2 ? first : await runSource(s.load, size(first.perSecond, this.budget.runSeconds / 2), t.port, this.sink, 120_000);
    if (!second.ok) this.problem(s, label, `calibration: ${second.problem}`);
    const n = size(second.perSecond, this.budget.runSeconds);
    this.results.counts.set(`${s.id}/${label}`, n);
    say(`  ${s.id} ${label}: calibration ${fmt(first.perSecond)}${second === first ? '' : `, ${fmt(second.perSecond)}`} msg/s -> ${n} messages per run`);
  }

  async measure(s: Scenario, label: string, rep: number): Promise<void> {
    switch (s.kind) {
      case 'throughput': {
        const t = await this.target(label);
        const n = this.results.counts.get(`${s.id}/${label}`) ?? 100;
        const r = await runSource(s.load, n, t.port, this.sink, Math.max(120_000, this.budget.runSeconds * 20_000));
        if (!r.ok) this.problem(s, label, `rep ${rep}: ${r.problem}`);
        else this.results.add(s.id, label, 'msgs/s', r.perSecond);
        say(`  ${s.id} ${label} rep ${rep}: ${n} msgs in ${r.seconds.toFixed(2)} s = ${fmt(r.perSecond)} msg/s${r.ok ? '' : ' (FAILED)'}`);
        return;
      }
      case 'dot-latency': {
        const t = await this.target(label);
        const r = await probeDotLatency(t.port, this.budget.probeMessages, s.size);
        if (r.problem !== undefined || r.failures > 0) this.problem(s, label, `rep ${rep}: ${r.problem ?? `${r.failures} messages not accepted`}`);
        const all = summarize(r.dotMs);
        if (all === undefined) return;
        const sorted = [...r.dotMs].sort((a, b) => a - b);
        const p90 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] as number;
        this.results.add(s.id, label, "'.'->250 median", all.median);
        this.results.add(s.id, label, "'.'->250 p90", p90);
        say(`  ${s.id} ${label} rep ${rep}: median ${all.median.toFixed(3)} ms, p90 ${p90.toFixed(3)} ms over ${r.dotMs.length} messages`);
        return;
      }
      case 'big-message': {
        // A fresh daemon, so the peak belongs to this message and not to earlier load; or
        // the long-running one, to see what a daemon that has been serving a while needs.
        const t = s.fresh ? await startTarget(this.spec(label), this.sink, this.targetOpts) : await this.target(label);
        try {
          // Let start-up settle (V8 compiles lazily) before the baseline.
          await new Promise((r) => setTimeout(r, 200));
          const sampler = t.daemon === undefined ? undefined : new RssSampler(t.daemon.pid);
          const r = await runSource({ concurrency: 1, size: s.size }, 1, t.port, this.sink, 300_000);
          const peakKb = sampler?.stop();
          if (!r.ok) this.problem(s, label, `rep ${rep}: ${r.problem}`);
          else {
            this.results.add(s.id, label, 'wall', r.seconds);
            if (sampler !== undefined && peakKb !== undefined) {
              this.results.add(s.id, label, 'peak RSS', peakKb / 1024);
              this.results.add(s.id, label, 'RSS before', sampler.baselineKb / 1024);
            }
          }
          const mem = peakKb === undefined ? '' : `, peak RSS ${(peakKb / 1024).toFixed(1)} MB (before ${((sampler?.baselineKb ?? 0) / 1024).toFixed(1)} MB)`;
          say(`  ${s.id} ${label} rep ${rep}: ${r.seconds.toFixed(2)} s${mem}${r.ok ? '' : ' (FAILED)'}`);
        } finally {
          if (s.fresh) {
            this.noteLog(s, t);
            await stopTarget(t);
          }
        }
        return;
      }
    }
  }

  private noteLog(s: Scenario, t: RunningTarget): void {
    const lines = logLines(t);
    if (lines.length > 0) this.problem(s, t.spec.label, `daemon log: ${lines.length} lines, e.g. ${JSON.stringify(lines.slice(0, 3))}`);
  }

  async stopAll(): Promise<void> {
    for (const t of this.running.values()) {
      if (!alive(t)) this.results.problems.push(`${t.spec.label} died during the run`);
      const lines = logLines(t);
      if (lines.length > 0) this.results.problems.push(`${t.spec.label} daemon log: ${lines.length} lines, e.g. ${JSON.stringify(lines.slice(0, 3))}`);
      await stopTarget(t);
    }
  }
}

async function machine(): Promise<string[]> {
  const line = async (cmd: string, args: string[]): Promise<string> => {
    try {
      const r = await run(cmd, args, 5000);
      return (r.stdout + r.stderr).trim().split('\n')[0] ?? '?';
    } catch {
      return '?';
    }
  };
  const meminfo = readFileSync('/proc/meminfo', 'latin1');
  const memKb = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? totalmem() / 1024);
  return [
    `host: ${hostname()}, ${await line('uname', ['-sr'])}`,
    `cpu: ${await line('nproc', [])} online (nproc), ${cpus()[0]?.model ?? '?'}`,
    `memory: ${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    `node: ${process.version}`,
    `postfix (smtp-source, smtp-sink): ${await line('/usr/sbin/postconf', ['-h', 'mail_version'])}`,
    `proxsmtpd: ${await line(PROXSMTPD, ['-v'])}`,
  ];
}

function report(r: Results, scenarios: readonly Scenario[], header: string[], partial: boolean): { text: string; failed: boolean } {
  const out: string[] = [...header, ''];
  for (const s of scenarios) {
    const metrics = METRICS[s.kind];
    const primary = metrics[0].name;
    out.push(`### ${s.title}`, '');
    const cols = ['target', ...metrics.map((m) => `${m.name} (${m.unit})`), `÷ proxsmtpd`, `÷ direct`];
    if (s.kind === 'throughput') cols.push('msgs per run');
    out.push(`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`);
    // The ratio columns divide by this scenario's proxsmtpd and direct targets (whatever
    // their labels, e.g. proxsmtpd-cat in a filter scenario).
    const ofKind = (kind: string): string | undefined => s.targets.find((l) => TARGETS.find((t) => t.label === l)?.kind === kind);
    for (const label of s.targets) {
      const from = source(s, label, scenarios);
      const me = r.median(from, label, primary);
      const ratio = (other: string | undefined): string => {
        const o = other === undefined ? undefined : r.median(source(s, other, scenarios), other, primary);
        return other === label || me === undefined || o === undefined || o === 0 ? '' : `${fmt(me / o)}x`;
      };
      const name = from === s.id ? label : `${label} (no filter: the \`${from}\` figures)`;
      const cells = [name, ...metrics.map((m) => fmtSummary(summarize(r.values(from, label, m.name)))), ratio(ofKind('proxsmtpd')), ratio(ofKind('direct'))];
      if (s.kind === 'throughput') cells.push(String(r.counts.get(`${from}/${label}`) ?? ''));
      out.push(`| ${cells.join(' | ')} |`);
    }
    out.push('');
  }
  out.push('### Bars', '', '| issue | bar | figure | verdict |', '|---|---|---|---|');
  let failed = false;
  for (const b of BARS) {
    const c = b.check(r);
    if (c === undefined && partial) continue; // not among the scenarios asked for
    if (c === undefined || !c.pass) failed = true;
    out.push(`| ${b.issue} | ${b.text} | ${c?.detail ?? 'not measured'} | ${c === undefined ? 'FAIL (no figure)' : c.pass ? 'PASS' : 'FAIL'} |`);
  }
  out.push('', '### Problems seen', '');
  if (r.problems.length === 0) out.push('None: every smtp-source run exited 0 (every message got its 250) and smtp-sink counted every message; no daemon logged an error or died.');
  else {
    // The same message from several daemons or repetitions once, with a count.
    const seen = new Map<string, number>();
    for (const p of r.problems) {
      const key = p.replace(/\(node:\d+\)/g, '(node:PID)').replace(/ rep \d+:/, ':');
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    for (const [p, n] of seen) out.push(`- ${n > 1 ? `(${n}x) ` : ''}${p}`);
  }
  out.push('');
  return { text: out.join('\n'), failed };
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const budget = BUDGETS[opts.mode];
  for (const f of [SMTP_SINK, SMTP_SOURCE, PROXSMTPD, SMTPSIFTD]) {
    if (!existsSync(f)) throw new Error(`missing ${f}${f === SMTPSIFTD ? ' (build with npx tsc -p .)' : ' (apt-get install postfix proxsmtp)'}`);
  }
  const scenarios = SCENARIOS.filter((s) => opts.only === undefined || opts.only.has(s.id));
  const dir = mkdtempSync(join(tmpdir(), 'smtpsift-bench-'));
  const started = new Date();
  const t0 = performance.now();
  say(`bench: ${opts.mode} run, ${budget.reps} repetitions, run directory ${dir}`);
  const sink = await Sink.start(dir);
  const runner = new Runner(budget, sink, { dir, nodeFlags: opts.nodeFlags });
  try {
    for (const s of scenarios) if (s.kind === 'throughput') for (const label of measured(s, scenarios)) await runner.calibrate(s, label);
    for (let rep = 1; rep <= budget.reps; rep++) {
      say(`repetition ${rep}/${budget.reps}`);
      for (const s of scenarios) {
        if (s.kind === 'big-message' && rep > budget.bigReps) continue;
        // Rotate the order of the targets from one repetition to the next.
        const targets = measured(s, scenarios);
        const k = (rep - 1) % targets.length;
        for (const label of [...targets.slice(k), ...targets.slice(0, k)]) await runner.measure(s, label, rep);
      }
    }
  } finally {
    await runner.stopAll();
    await sink.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const command = ['bench/run', ...process.argv.slice(2)].join(' ');
  const header = [
    `## smtpsift benchmark: ${opts.mode} run`,
    '',
    `- command: \`${command}\` (in ${REPO.replace(/\/$/, '')})`,
    `- date: ${started.toISOString()}, took ${seconds.toFixed(0)} s`,
    ...(await machine()).map((m) => `- ${m}`),
    `- method: smtp-sink on 127.0.0.1 as the upstream of every target; smtp-source without -A (any non-2xx aborts the run); ` +
      `${budget.reps} interleaved repetitions (target order rotated), ${budget.runSeconds} s per smtp-source run (message count set by a calibration run per target, which is also the warm-up), ` +
      `'.'->250 over ${budget.probeMessages} messages on one connection per repetition, the 50 MB scenarios ${budget.bigReps}x; peak RSS polled every 5 ms over the daemon and its children, and the kernel's VmHWM. ` +
      'Figures: median (min-max) over repetitions; ratios are of medians.',
    `- extra configuration lines (the same for smtpsiftd and proxsmtpd): ${TARGETS.filter((t) => t.config !== undefined)
      .map((t) => `${t.label}: \`${Object.entries(t.config ?? {}).map(([k, v]) => `${k}: ${v}`).join(', ')}\``)
      .join('; ')}`,
  ];
  const { text, failed } = report(runner.results, scenarios, header, opts.only !== undefined);
  process.stdout.write(`\n${text}`);
  if (opts.results !== undefined) {
    writeFileSync(opts.results, `# Benchmark results\n\nWritten by \`bench/run\`; see bench/README.md for what each figure means.\n\n${text}`);
    say(`bench: results written to ${opts.results}`);
  }
  if (opts.keep) say(`bench: run directory kept: ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
  return failed ? 1 : 0;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllNow();
    process.exit(130);
  });
}

main().then(
  async (status) => {
    await stopAll();
    process.exit(status);
  },
  async (e: unknown) => {
    say(`bench: ${(e as Error).stack ?? String(e)}`);
    await stopAll();
    process.exit(2);
  },
);

// The smtpsift benchmark (issue 2, extended by issue 7): smtp-source and our own probes
// against smtpsiftd, the Debian proxsmtpd and the upstream itself (direct), in one run;
// every target of a scenario in front of the same upstream (smtp-sink, a slow smtp-sink,
// or our own sink for the idle connections).
// Targets are interleaved within each repetition (rotating who goes first; the latency
// probes take them in turn message by message), so a slow spell of the machine hits all
// of them; figures are medians with min-max, beside the CPU steal of their moments.
//
// Run through bench/run (it builds first). Not a test: nothing here is named like one,
// and `node --test dist/test/` never looks in dist/bench/.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { bars, BUDGETS, FULL_ONLY, METRICS, SCENARIOS, STEAL, TARGETS, UPSTREAMS, type Budget, type Figures, type Mode, type Scenario, type UpstreamId } from './plan.js';
import { probeBurst } from './lib/burst.js';
import { measureIdle } from './lib/idle.js';
import { fdLimit, fmtLimit } from './lib/limits.js';
import { RssSampler } from './lib/memory.js';
import { NodeSink } from './lib/node-sink.js';
import { killAllNow, run, stopAll } from './lib/processes.js';
import { cpuTimes, stealPercent } from './lib/cpu.js';
import { probeDotLatencies, probeSessionLatencies, probeSessionLatency } from './lib/probe.js';
import { Sink, SMTP_SINK } from './lib/sink.js';
import { runSource, SMTP_SOURCE } from './lib/source.js';
import { fmt, fmtSummary, summarize } from './lib/stats.js';
import { alive, howEnded, logLines, PROXSMTPD, REPO, SMTPSIFTD, startTarget, stopTarget, type RunningTarget, type TargetOptions, type TargetSpec } from './lib/targets.js';

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

const T0 = performance.now();
/** Progress on stderr, with the seconds since start (the quick mode has a time budget). */
const say = (m: string): void => void process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(5)}] ${m}\n`);

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
  /** What the report should say besides figures (descriptor limits seen, scaled-down scenarios). */
  readonly notes: string[] = [];
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

  min(scenario: string, target: string, metric: string): number | undefined {
    return summarize(this.values(scenario, target, metric))?.min;
  }

  max(scenario: string, target: string, metric: string): number | undefined {
    return summarize(this.values(scenario, target, metric))?.max;
  }
}

type Upstream = Sink | NodeSink;
const MB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (v: readonly number[]): number | undefined => summarize(v)?.median;

const kindOf = (label: string): TargetSpec['kind'] | undefined => TARGETS.find((t) => t.label === label)?.kind;

class Runner {
  /** Long-running daemons, by target label and upstream. */
  private readonly running = new Map<string, RunningTarget>();
  private readonly upstreams = new Map<UpstreamId, Upstream>();
  readonly results = new Results();

  constructor(
    private readonly budget: Budget,
    private readonly targetOpts: TargetOptions,
  ) {}

  private spec(label: string): TargetSpec {
    const t = TARGETS.find((x) => x.label === label);
    if (t === undefined) throw new Error(`no target ${label}`);
    return t;
  }

  /** An upstream, started on first use. */
  async upstream(id: UpstreamId): Promise<Upstream> {
    let u = this.upstreams.get(id);
    if (u === undefined) {
      const def = UPSTREAMS[id];
      u = def.kind === 'node-sink' ? await NodeSink.start(this.targetOpts.dir, `${id}-sink`) : await Sink.start(this.targetOpts.dir, { name: `${id}-sink`, args: def.args });
      this.upstreams.set(id, u);
    }
    return u;
  }

  /** An smtp-sink upstream: smtp-source runs are checked against its counters. */
  private async smtpSink(id: UpstreamId): Promise<Sink> {
    const u = await this.upstream(id);
    if (!(u instanceof Sink)) throw new Error(`upstream ${id} is not smtp-sink: no message counters`);
    return u;
  }

  /** The long-running instance of a target in front of an upstream, started on first use (and again if it died). */
  private async target(label: string, upstream: UpstreamId): Promise<RunningTarget> {
    const key = `${label}@${upstream}`;
    let t = this.running.get(key);
    if (t !== undefined && !alive(t)) {
      this.results.problems.push(`${label} died (${howEnded(t)}); restarted`);
      t = undefined;
    }
    if (t === undefined) {
      t = await startTarget(this.spec(label), await this.upstream(upstream), this.targetOpts);
      this.running.set(key, t);
      // Warm-up (V8 compiles lazily), so that no first run pays for it: the quick mode has
      // no calibration pilot. Not in front of the slow upstream: 1 s per message there, and
      // its figures are the upstream's delay anyway.
      if (upstream === 'sink') await probeSessionLatency(t.port, 5, 4096, 5000);
    }
    return t;
  }

  /**
   * Runs one measurement; an exception (a daemon that cannot be restarted, a probe that
   * breaks) is a problem of that scenario and target, and the run goes on to the next.
   */
  async guarded(s: Scenario, label: string, f: () => Promise<void>): Promise<void> {
    try {
      await f();
    } catch (e) {
      this.problem(s, label, `measurement failed: ${(e as Error).message}`);
    }
  }

  private problem(s: Scenario, label: string, what: string): void {
    const m = `${s.id} ${label}: ${what}`;
    this.results.problems.push(m);
    say(`  PROBLEM ${m}`);
  }

  /**
   * Sizes the smtp-source runs to take about budget.runSeconds, from two pilot runs (the
   * first, tiny, is mostly start-up and JIT warm-up; the second, half a run long, is used).
   * The first pilot has 2x the concurrency in messages, at least 20. A scenario with an
   * ideal rate (slow upstream) needs no pilot: its rate is the upstream's.
   */
  async calibrate(s: Scenario & { kind: 'throughput' }, label: string): Promise<void> {
    const c = s.load.concurrency;
    const key = `${s.id}/${label}`;
    if (s.idealPerSecond !== undefined) {
      this.results.counts.set(key, Math.max(c, Math.round(s.idealPerSecond * this.budget.runSeconds)));
      return;
    }
    if (!this.budget.calibrate) {
      this.results.counts.set(key, Math.max(2 * c, 20));
      return;
    }
    const up = s.upstream ?? 'sink';
    const t = await this.target(label, up);
    const sink = await this.smtpSink(up);
    const size = (rate: number, seconds: number): number => Math.min(50_000, Math.max(c, 10, Math.round(rate * seconds)));
    const first = await runSource(s.load, Math.max(2 * c, 20), t.port, sink, 120_000);
    if (!first.ok) this.problem(s, label, `calibration: ${first.problem}`);
    // A quick run has no time for the second pilot.
    const second = this.budget.runSeconds < 2 ? first : await runSource(s.load, size(first.perSecond, this.budget.runSeconds / 2), t.port, sink, 120_000);
    if (!second.ok) this.problem(s, label, `calibration: ${second.problem}`);
    const n = size(second.perSecond, this.budget.runSeconds);
    this.results.counts.set(key, n);
    say(`  ${s.id} ${label}: calibration ${fmt(first.perSecond)}${second === first ? '' : `, ${fmt(second.perSecond)}`} msg/s -> ${n} messages per run`);
  }

  /**
   * One repetition of a scenario for `labels`, each in turn (rotated by the caller), or
   * several in the same moments where the probe takes them in turn itself (latency). Each
   * records the CPU steal of its own moments.
   */
  async measure(s: Scenario, labels: readonly string[], rep: number): Promise<void> {
    // proxsmtpd stalls ~44 ms on every '.': taken in turn with the others, it would put that
    // much idle time before every message of theirs. It is probed on its own.
    const groups = s.kind === 'dot-latency' ? [labels.filter((l) => kindOf(l) !== 'proxsmtpd'), labels.filter((l) => kindOf(l) === 'proxsmtpd')] : labels.map((l) => [l]);
    for (const group of groups) {
      if (group.length > 0) await this.guarded(s, group.join(', '), () => this.withSteal(s, group, () => this.measureGroup(s, group, rep)));
    }
  }

  private async withSteal(s: Scenario, labels: readonly string[], f: () => Promise<void>): Promise<void> {
    const before = cpuTimes();
    await f();
    const steal = stealPercent(before, cpuTimes());
    if (steal !== undefined) for (const label of labels) this.results.add(s.id, label, STEAL, steal);
  }

  private async measureGroup(s: Scenario, group: readonly string[], rep: number): Promise<void> {
    if (s.kind === 'dot-latency') return this.latency(s, group, rep);
    const label = group[0] as string;
    switch (s.kind) {
      case 'throughput':
        return this.throughput(s, label, rep);
      case 'big-message':
        return this.bigMessage(s, label, rep);
      case 'burst':
        return this.burst(s, label, rep);
      case 'idle':
        return this.idle(s, label, rep);
    }
  }

  private async throughput(s: Scenario & { kind: 'throughput' }, label: string, rep: number): Promise<void> {
    const up = s.upstream ?? 'sink';
    const t = await this.target(label, up);
    const n = this.results.counts.get(`${s.id}/${label}`) ?? 100;
    const r = await runSource(s.load, n, t.port, await this.smtpSink(up), Math.max(120_000, this.budget.runSeconds * 20_000));
    if (!r.ok) this.problem(s, label, `rep ${rep}: ${r.problem}`);
    else {
      this.results.add(s.id, label, 'msgs/s', r.perSecond);
      this.results.add(s.id, label, 'MB/s', (r.perSecond * s.load.size) / MB);
    }
    say(`  ${s.id} ${label} rep ${rep}: ${n} msgs in ${r.seconds.toFixed(2)} s = ${fmt(r.perSecond)} msg/s${r.ok ? '' : ' (FAILED)'}`);
  }

  /**
   * '.'->250 and connect->250 of `labels` in the same moments: the probes take one message,
   * then one session, from each in turn (this VM's latency drifts 2-4x within seconds, with
   * the host's steal), so that none of them has its figures from a luckier spell.
   */
  private async latency(s: Scenario & { kind: 'dot-latency' }, labels: readonly string[], rep: number): Promise<void> {
    const ports: number[] = [];
    for (const label of labels) ports.push((await this.target(label, 'sink')).port);
    const dots = await probeDotLatencies(ports, this.budget.probeMessages, s.size);
    const sessions = await probeSessionLatencies(ports, this.budget.probeSessions, s.size);
    labels.forEach((label, k) => {
      const r = dots[k] as (typeof dots)[number];
      if (r.problem !== undefined || r.failures > 0) this.problem(s, label, `rep ${rep}: ${r.problem ?? `${r.failures} messages not accepted`}`);
      const all = summarize(r.dotMs);
      if (all !== undefined) {
        const sorted = [...r.dotMs].sort((a, b) => a - b);
        const p90 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] as number;
        this.results.add(s.id, label, "'.'->250 median", all.median);
        this.results.add(s.id, label, "'.'->250 p90", p90);
        say(`  ${s.id} ${label} rep ${rep}: '.'->250 median ${all.median.toFixed(3)} ms, p90 ${p90.toFixed(3)} ms over ${r.dotMs.length} messages`);
      }
      const c = sessions[k] as (typeof sessions)[number];
      if (c.failures > 0) this.problem(s, label, `rep ${rep}: ${c.failures} of ${this.budget.probeSessions} one-message sessions failed, e.g. ${c.problem ?? '?'}`);
      const m = median(c.sessionMs);
      if (m !== undefined) {
        this.results.add(s.id, label, 'connect->250 median', m);
        say(`  ${s.id} ${label} rep ${rep}: connect->250 median ${m.toFixed(3)} ms over ${c.sessionMs.length} sessions`);
      }
    });
  }

  private async bigMessage(s: Scenario & { kind: 'big-message' }, label: string, rep: number): Promise<void> {
    // A fresh daemon, so the peak belongs to this message and not to earlier load; or
    // the long-running one, to see what a daemon that has been serving a while needs.
    const sink = await this.smtpSink('sink');
    const t = s.fresh ? await this.fresh(s, label, 'sink') : await this.target(label, 'sink');
    if (t === undefined) return;
    try {
      // Let start-up settle (V8 compiles lazily) before the baseline.
      await sleep(200);
      const sampler = t.daemon === undefined ? undefined : new RssSampler(t.daemon.pid);
      const r = await runSource({ concurrency: 1, size: s.size }, 1, t.port, sink, 300_000);
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
      if (s.fresh) await this.retire(s, t);
    }
  }

  /**
   * A fresh daemon per repetition with the scenario's MaxConnections: a daemon that
   * crashes under the burst (proxsmtpd past ~509 connections) takes nothing else down.
   */
  private async burst(s: Scenario & { kind: 'burst' }, label: string, rep: number): Promise<void> {
    const t = await this.fresh(s, label, 'sink', s.config);
    if (t === undefined) return;
    try {
      // Warm-up, one session at a time (a burst would only meet proxsmtpd's backlog of 5).
      await probeSessionLatency(t.port, 3, 4096, 5000);
      const r = await probeBurst(t.port, s.connections, this.budget.burstDeadlineMs);
      const ms = summarize(r.greetedMs);
      this.results.add(s.id, label, 'greeted', r.greetedMs.length);
      if (ms !== undefined) {
        this.results.add(s.id, label, 'max to 220', ms.max);
        this.results.add(s.id, label, 'p50 to 220', ms.median);
      }
      const failed = [...r.failures].map(([why, n]) => `${n} ${why}`).join(', ');
      if (failed !== '') this.problem(s, label, `rep ${rep}: ${r.attempted - r.greetedMs.length} of ${r.attempted} not greeted: ${failed}`);
      if (!alive(t)) this.problem(s, label, `rep ${rep}: the daemon died during the burst (${howEnded(t)})`);
      say(`  ${s.id} ${label} rep ${rep}: ${r.greetedMs.length}/${r.attempted} greeted, max ${fmt(ms?.max ?? NaN)} ms, p50 ${fmt(ms?.median ?? NaN)} ms`);
    } finally {
      await this.retire(s, t);
    }
  }

  /** A fresh daemon per repetition in front of our own sink, with MaxConnections for them all. */
  private async idle(s: Scenario & { kind: 'idle' }, label: string, rep: number): Promise<void> {
    const count = this.budget.idleConnections;
    const config = this.spec(label).kind === 'smtpsiftd' ? { ...s.config, ...s.ours } : s.config;
    const t = await this.fresh(s, label, s.upstream, config);
    if (t === undefined) return;
    // The usual latency, in the same moments: a twin daemon that holds nothing (ours only,
    // the daemon the bar judges: proxsmtpd's twin would die of the same handshakes).
    const twin = this.spec(label).kind === 'smtpsiftd' ? await this.fresh(s, label, s.upstream, config) : undefined;
    try {
      const pid = t.daemon?.pid;
      const f = await measureIdle(t.port, t.daemon, { count, probeMessages: this.budget.idleProbeMessages, deadlineMs: this.budget.idleDeadlineMs, dir: this.targetOpts.dir, twinPort: twin?.port });
      const up = alive(t);
      this.results.add(s.id, label, 'held', f.heldAfter);
      this.results.add(s.id, label, 'most held', f.opened.mostHeld);
      this.results.add(s.id, label, 'open', f.opened.ms / 1000);
      this.results.add(s.id, label, 'served', f.during.dotMs.length);
      if (up && f.rssBeforeKb !== undefined && f.rssHeldKb !== undefined && f.opened.held > 0) {
        this.results.add(s.id, label, 'KB/conn', (f.rssHeldKb - f.rssBeforeKb) / f.opened.held);
        this.results.add(s.id, label, 'RSS before', f.rssBeforeKb / 1024);
        this.results.add(s.id, label, 'RSS held', f.rssHeldKb / 1024);
      }
      const before = median(f.before.dotMs);
      const during = median(f.during.dotMs);
      const after = f.after === undefined ? undefined : median(f.after.dotMs);
      // The usual latency: the probes on both sides of the holding, together.
      const usual = median([...f.before.dotMs, ...(f.after?.dotMs ?? [])]);
      if (before !== undefined) this.results.add(s.id, label, "'.'->250 before", before);
      if (after !== undefined) this.results.add(s.id, label, "'.'->250 after", after);
      if (during !== undefined) this.results.add(s.id, label, "'.'->250 held", during);
      if (usual !== undefined && during !== undefined) this.results.add(s.id, label, 'held ÷ usual', during / usual);
      const twinMedian = f.twin === undefined ? undefined : median(f.twin.dotMs);
      if (twinMedian !== undefined) this.results.add(s.id, label, "'.'->250 twin", twinMedian);
      if (twinMedian !== undefined && during !== undefined) this.results.add(s.id, label, 'held ÷ twin', during / twinMedian);
      if (f.twin !== undefined && (f.twin.problem !== undefined || f.twin.failures > 0)) {
        this.problem(s, label, `rep ${rep}: the twin daemon: ${f.twin.dotMs.length} of ${this.budget.idleProbeMessages} accepted${f.twin.problem === undefined ? '' : `; ${f.twin.problem}`}`);
      }
      const failed = Object.entries(f.opened.failures).map(([why, n]) => `${n} ${why}`).join(', ');
      if (failed !== '' || f.opened.stoppedEarly !== undefined) {
        this.problem(s, label, `rep ${rep}: ${f.opened.held} of ${count} held${failed === '' ? '' : `; failed handshakes: ${failed}`}${f.opened.stoppedEarly === undefined ? '' : `; ${f.opened.stoppedEarly}`}`);
      }
      if (f.heldAfter < f.opened.held) this.problem(s, label, `rep ${rep}: ${f.opened.held - f.heldAfter} held connections were closed while mail was sent`);
      if (f.during.problem !== undefined || f.during.failures > 0) {
        this.problem(s, label, `rep ${rep}: mail while holding: ${f.during.dotMs.length} of ${this.budget.idleProbeMessages} accepted${f.during.problem === undefined ? '' : `; ${f.during.problem}`}`);
      }
      if (!up) this.problem(s, label, `rep ${rep}: the daemon died while connections were opened or held (${howEnded(t)}), after holding at most ${f.opened.mostHeld}`);
      if (pid !== undefined) {
        const fds =
          f.daemonFds?.[0] === undefined
            ? 'gone while holding'
            : `${f.daemonFds.map((n) => n ?? '?').join(' + ')} descriptors open${f.daemonFds.length > 1 ? ' (per process)' : ''} with ${f.opened.held} connections held`;
        this.results.notes.push(`${s.id} ${label} rep ${rep}: descriptor limit ${fmtLimit(f.daemonLimit)} (/proc/PID/limits after start-up); ${fds}`);
      }
      const kb = f.rssHeldKb !== undefined && f.rssBeforeKb !== undefined && f.opened.held > 0 ? `, ${((f.rssHeldKb - f.rssBeforeKb) / f.opened.held).toFixed(1)} KB/conn` : '';
      say(
        `  ${s.id} ${label} rep ${rep}: ${f.opened.held}/${count} held in ${(f.opened.ms / 1000).toFixed(1)} s (${f.heldAfter} after the probe)${kb}, ` +
          `'.'->250 ${fmt(before ?? NaN)} ms before, ${fmt(during ?? NaN)} ms held (${f.during.dotMs.length} served), ${fmt(after ?? NaN)} ms after` +
          (twinMedian === undefined ? '' : `, ${fmt(twinMedian)} ms on the twin meanwhile`),
      );
    } finally {
      if (twin !== undefined) await this.retire(s, twin);
      await this.retire(s, t);
    }
  }

  /**
   * A daemon for one repetition, with the scenario's configuration lines; undefined (and a
   * problem in the report) when it does not start, so that one daemon's failure is a
   * finding and the run goes on.
   */
  private async fresh(s: Scenario, label: string, upstream: UpstreamId, config: Readonly<Record<string, string>> = {}): Promise<RunningTarget | undefined> {
    try {
      return await startTarget(this.spec(label), await this.upstream(upstream), this.targetOpts, config);
    } catch (e) {
      this.problem(s, label, `the daemon did not start: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** Stops a daemon started for one repetition, its log lines going to the report. */
  private async retire(s: Scenario, t: RunningTarget): Promise<void> {
    this.noteLog(s, t);
    await stopTarget(t);
  }

  private noteLog(s: Scenario, t: RunningTarget): void {
    const lines = logLines(t);
    if (lines.length > 0) this.problem(s, t.spec.label, `daemon log: ${lines.length} lines, e.g. ${JSON.stringify(lines.slice(0, 3))}`);
  }

  /** The upstreams' command lines, for the report. */
  describeUpstreams(): string[] {
    return [...this.upstreams].map(([id, u]) => `${id}: ${u instanceof Sink ? `\`smtp-sink ${u.args.join(' ')}\`` : 'bench/lib/node-sink.ts (our own)'}`);
  }

  async stopAll(): Promise<void> {
    for (const t of this.running.values()) {
      if (!alive(t)) this.results.problems.push(`${t.spec.label} died during the run`);
      const lines = logLines(t);
      if (lines.length > 0) this.results.problems.push(`${t.spec.label} daemon log: ${lines.length} lines, e.g. ${JSON.stringify(lines.slice(0, 3))}`);
      await stopTarget(t);
    }
    for (const u of this.upstreams.values()) await u.stop();
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

function report(r: Results, scenarios: readonly Scenario[], header: string[], partial: boolean, budget: Budget): { text: string; failed: boolean } {
  const out: string[] = [...header, ''];
  for (const s of scenarios) {
    const metrics = METRICS[s.kind];
    const primary = metrics[0].name;
    out.push(`### ${s.title}`, '');
    const cols = ['target', ...metrics.map((m) => `${m.name} (${m.unit})`), `÷ proxsmtpd`, `÷ direct`];
    if (s.kind === 'throughput') cols.push('msgs per run');
    cols.push(`${STEAL} (%)`);
    out.push(`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`);
    // The ratio columns divide by this scenario's proxsmtpd and direct targets (whatever
    // their labels, e.g. proxsmtpd-cat in a filter scenario).
    const ofKind = (kind: string): string | undefined => s.targets.find((l) => kindOf(l) === kind);
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
      cells.push(fmtSummary(summarize(r.values(from, label, STEAL))));
      out.push(`| ${cells.join(' | ')} |`);
    }
    out.push('');
  }
  out.push('### Bars', '', '| issue | bar | figure | verdict |', '|---|---|---|---|');
  let failed = false;
  for (const b of bars(budget)) {
    const c = b.check(r);
    if (c === undefined && partial) continue; // not among the scenarios asked for
    if (c === undefined || !c.pass) failed = true;
    out.push(`| ${b.issue} | ${b.text} | ${c?.detail ?? 'not measured'} | ${c === undefined ? 'FAIL (no figure)' : c.pass ? 'PASS' : 'FAIL'} |`);
  }
  if (r.notes.length > 0) out.push('', '### Notes', '', ...r.notes.map((n) => `- ${n}`));
  out.push('', '### Problems seen', '');
  if (r.problems.length === 0) out.push('None: every smtp-source run exited 0 (every message got its 250) and smtp-sink counted every message; no daemon logged an error or died.');
  else {
    // The same message from several daemons or repetitions once, with a count.
    const seen = new Map<string, number>();
    for (const p of r.problems) {
      const key = p.replace(/\(node:\d+\)/g, '(node:PID)').replace(/: rep \d+:/, ':');
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    for (const [p, n] of seen) out.push(`- ${n > 1 ? `(${n}x) ` : ''}${p}`);
  }
  out.push('');
  return { text: out.join('\n'), failed };
}

/** What a quick run does with less than a full one, said in its report (issue 7). */
function scaledDown(mode: Mode): string[] {
  if (mode === 'full') return [];
  const q = BUDGETS.quick;
  const f = BUDGETS.full;
  const less: string[] = [];
  const cmp = (what: string, a: number, b: number): void => void (a !== b && less.push(`${what} ${a.toLocaleString('en')} (full: ${b.toLocaleString('en')})`));
  cmp('repetitions', q.reps, f.reps);
  if (!q.calibrate) less.push('no calibration: 2x the concurrency in messages per smtp-source run, at least 20');
  cmp('seconds per slow-upstream run', q.runSeconds, f.runSeconds);
  cmp("'.'->250 messages", q.probeMessages, f.probeMessages);
  cmp('connect->250 sessions', q.probeSessions, f.probeSessions);
  cmp('repetitions of the fresh-daemon scenarios', q.heavyReps, f.heavyReps);
  cmp('idle connections', q.idleConnections, f.idleConnections);
  cmp('messages sent while holding them', q.idleProbeMessages, f.idleProbeMessages);
  cmp('ms a burst connection may wait for its greeting', q.burstDeadlineMs, f.burstDeadlineMs);
  less.push(`not measured (no bar judges them): ${[...FULL_ONLY].join(', ')}`);
  return less.length === 0 ? [] : [`quick mode, scaled down: ${less.join(', ')}`];
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const budget = BUDGETS[opts.mode];
  for (const f of [SMTP_SINK, SMTP_SOURCE, PROXSMTPD, SMTPSIFTD]) {
    if (!existsSync(f)) throw new Error(`missing ${f}${f === SMTPSIFTD ? ' (build with npx tsc -p .)' : ' (apt-get install postfix proxsmtp)'}`);
  }
  const scenarios = SCENARIOS.filter((s) => opts.only === undefined || opts.only.has(s.id)).map((s) =>
    opts.mode === 'quick' ? { ...s, targets: s.targets.filter((l) => !FULL_ONLY.has(`${s.id}/${l}`)) } : s,
  );
  const dir = mkdtempSync(join(tmpdir(), 'smtpsift-bench-'));
  const started = new Date();
  const t0 = performance.now();
  say(`bench: ${opts.mode} run, ${budget.reps} repetitions, run directory ${dir}`);
  const limit = fdLimit('self');
  say(`bench: descriptor limit of the benchmark and of every process it starts: ${fmtLimit(limit)}`);
  for (const m of scaledDown(opts.mode)) say(`bench: ${m}`);
  const runner = new Runner(budget, { dir, nodeFlags: opts.nodeFlags });
  try {
    for (const s of scenarios) if (s.kind === 'throughput') for (const label of measured(s, scenarios)) await runner.guarded(s, label, () => runner.calibrate(s, label));
    for (let rep = 1; rep <= budget.reps; rep++) {
      say(`repetition ${rep}/${budget.reps}`);
      for (const s of scenarios) {
        // The scenarios that start a daemon per repetition are the slow ones: fewer repetitions.
        if ((s.kind === 'big-message' || s.kind === 'burst' || s.kind === 'idle') && rep > budget.heavyReps) continue;
        // Rotate the order of the targets from one repetition to the next.
        const targets = measured(s, scenarios);
        const k = (rep - 1) % targets.length;
        await runner.measure(s, [...targets.slice(k), ...targets.slice(0, k)], rep);
      }
    }
  } finally {
    await runner.stopAll();
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
      `${budget.reps} interleaved repetitions (target order rotated), ` +
      (budget.calibrate
        ? `${budget.runSeconds} s per smtp-source run (message count set by a calibration run per target, which is also a warm-up), `
        : 'smtp-source runs of 2x the concurrency in messages, at least 20 (no calibration), ') +
      'every long-running daemon warmed up with 5 one-message sessions, ' +
      `'.'->250 over ${budget.probeMessages} messages on one connection and connect->250 over ${budget.probeSessions} one-message sessions per repetition, smtpsiftd, direct and the relay taken in turn message by message and session by session (proxsmtpd on its own); ` +
      `the scenarios with a fresh daemon per repetition (50 MB, burst, idle) ${budget.heavyReps}x; peak RSS polled every 5 ms over the daemon and its children, and the kernel's VmHWM. ` +
      'Figures: median (min-max) over repetitions; ratios are of medians; CPU steal: the share of the machine\'s CPU time the host took during each measurement (/proc/stat).',
    ...scaledDown(opts.mode).map((m) => `- ${m}`),
    `- upstreams: ${runner.describeUpstreams().join('; ')}`,
    `- descriptor limit (RLIMIT_NOFILE) of the benchmark and of every process it starts: ${fmtLimit(limit)}` +
      (limit !== undefined && limit.hard < 2 * budget.idleConnections + 100
        ? ` (bench/run asked for a higher hard limit and was refused: holding ${budget.idleConnections} proxied connections takes ${2 * budget.idleConnections} descriptors in a daemon, a client and an upstream socket each, more than this)`
        : ''),
    `- extra configuration lines (the same for smtpsiftd and proxsmtpd): ${TARGETS.filter((t) => t.config !== undefined)
      .map((t) => `${t.label}: \`${Object.entries(t.config ?? {}).map(([k, v]) => `${k}: ${v}`).join(', ')}\``)
      .join('; ')}; ${scenarios
      .flatMap((s) => (s.kind === 'burst' || s.kind === 'idle' ? [`${s.id}: \`${Object.entries(s.config).map(([k, v]) => `${k}: ${v}`).join(', ')}\``] : []))
      .join('; ')}` +
      scenarios
        .flatMap((s) => (s.kind === 'idle' ? [`; smtpsiftd only, in ${s.id}: \`${Object.entries(s.ours).map(([k, v]) => `${k}: ${v}`).join(', ')}\``] : []))
        .join(''),
  ];
  const { text, failed } = report(runner.results, scenarios, header, opts.only !== undefined, budget);
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

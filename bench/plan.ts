// What the benchmark measures: the targets, the scenarios and the bars, as tables.
// Issue 7 extends these tables (reused connections, filters, 10 recipients, 1 MB messages,
// bursts, idle connections, a slow upstream); the runner in main.ts stays as it is, and a
// new kind of measurement is one more entry in `measure` there.

import type { Load } from './lib/source.js';
import type { TargetSpec } from './lib/targets.js';

/** Filter configurations (issue 3, issue 7): the same lines for smtpsiftd and proxsmtpd. */
const CAT_PIPE = { FilterCommand: 'cat', FilterType: 'pipe' } as const;
const TRUE_FILE = { FilterCommand: 'true', FilterType: 'file' } as const;

export const TARGETS: readonly TargetSpec[] = [
  { label: 'smtpsiftd', kind: 'smtpsiftd' },
  { label: 'proxsmtpd', kind: 'proxsmtpd' },
  { label: 'direct', kind: 'direct' },
  { label: 'smtpsiftd-cat', kind: 'smtpsiftd', config: CAT_PIPE },
  { label: 'proxsmtpd-cat', kind: 'proxsmtpd', config: CAT_PIPE },
  { label: 'smtpsiftd-true', kind: 'smtpsiftd', config: TRUE_FILE },
  { label: 'proxsmtpd-true', kind: 'proxsmtpd', config: TRUE_FILE },
];

export type Mode = 'quick' | 'full';

/** How long a mode may take: repetitions and the size of each measurement. */
export interface Budget {
  /** Interleaved repetitions of every scenario and target. */
  readonly reps: number;
  /** Target duration of one smtp-source run; message counts are set from a calibration run. */
  readonly runSeconds: number;
  /** Messages per connection for the '.'-to-250 probe. */
  readonly probeMessages: number;
  /** Repetitions of the one-big-message scenarios (each on a freshly started daemon). */
  readonly bigReps: number;
}

export const BUDGETS: Readonly<Record<Mode, Budget>> = {
  quick: { reps: 3, runSeconds: 1, probeMessages: 40, bigReps: 1 },
  full: { reps: 5, runSeconds: 4, probeMessages: 200, bigReps: 3 },
};

export type Scenario =
  | {
      /** smtp-source throughput: messages/s. */
      readonly kind: 'throughput';
      readonly id: string;
      readonly title: string;
      readonly load: Load;
      readonly targets: readonly string[];
      /**
       * The scenario whose `direct` figures stand for this one's: direct has no filter, so a
       * filter scenario's load straight to the sink is that scenario's load. When that scenario
       * is in the run, direct is not measured again here (its row and ratios are borrowed).
       */
      readonly directFrom?: string;
    }
  | {
      /** Our raw client: median ms from '.' to the final reply, `size`-byte messages on one connection. */
      readonly kind: 'dot-latency';
      readonly id: string;
      readonly title: string;
      readonly size: number;
      readonly targets: readonly string[];
    }
  | {
      /** One message of `size` bytes with smtp-source: wall time, and the daemon tree's peak RSS. */
      readonly kind: 'big-message';
      readonly id: string;
      readonly title: string;
      readonly size: number;
      /** A freshly started daemon per repetition, or the long-running one (after the other scenarios' load). */
      readonly fresh: boolean;
      readonly targets: readonly string[];
    };

/** The unfiltered targets. Filter scenarios name their own (direct has no filter: the physical limit). */
const ALL = ['smtpsiftd', 'proxsmtpd', 'direct'];
const KB = 1024;
const MB = 1024 * KB;

export const SCENARIOS: readonly Scenario[] = [
  { kind: 'throughput', id: 'c1', title: '4 KB messages, concurrency 1, new connection per message', load: { concurrency: 1, size: 4 * KB }, targets: ALL },
  { kind: 'throughput', id: 'c20', title: '4 KB messages, concurrency 20, new connection per message', load: { concurrency: 20, size: 4 * KB }, targets: ALL },
  {
    kind: 'throughput',
    id: 'c20-cat',
    title: '`FilterCommand: cat`, `FilterType: pipe`: 4 KB messages, concurrency 20, new connection per message (direct: no filter)',
    load: { concurrency: 20, size: 4 * KB },
    targets: ['smtpsiftd-cat', 'proxsmtpd-cat', 'direct'],
    directFrom: 'c20',
  },
  {
    kind: 'throughput',
    id: 'c20-true',
    title: '`FilterCommand: true`, `FilterType: file`: 4 KB messages, concurrency 20, new connection per message (direct: no filter)',
    load: { concurrency: 20, size: 4 * KB },
    targets: ['smtpsiftd-true', 'proxsmtpd-true', 'direct'],
    directFrom: 'c20',
  },
  { kind: 'dot-latency', id: 'dot', title: "'.' to 250 at concurrency 1 (4 KB messages, one connection)", size: 4 * KB, targets: ALL },
  { kind: 'big-message', id: 'big50', title: 'one 50 MB message (fresh daemon per repetition)', size: 50 * MB, fresh: true, targets: ALL },
  {
    kind: 'big-message',
    id: 'big50-warm',
    title: 'one 50 MB message on the long-running daemon (after the load above; peak reset with clear_refs)',
    size: 50 * MB,
    fresh: false,
    targets: ['smtpsiftd', 'proxsmtpd'],
  },
];

/** Metrics each kind of scenario reports: name, unit, and whether more is better. */
export const METRICS = {
  throughput: [{ name: 'msgs/s', unit: 'msg/s', higherIsBetter: true }],
  'dot-latency': [
    { name: "'.'->250 median", unit: 'ms', higherIsBetter: false },
    { name: "'.'->250 p90", unit: 'ms', higherIsBetter: false },
  ],
  'big-message': [
    { name: 'wall', unit: 's', higherIsBetter: false },
    { name: 'peak RSS', unit: 'MB', higherIsBetter: false },
    { name: 'RSS before', unit: 'MB', higherIsBetter: false },
  ],
} as const;

/** Reads a figure from the results: the median of a metric for a target in a scenario. */
export type Figures = {
  median(scenario: string, target: string, metric: string): number | undefined;
  max(scenario: string, target: string, metric: string): number | undefined;
};

export interface Bar {
  readonly issue: number;
  readonly text: string;
  /** undefined when the figures are missing (counts as FAIL). */
  check(f: Figures): { pass: boolean; detail: string } | undefined;
}

export const BARS: readonly Bar[] = [
  {
    issue: 2,
    text: 'no-filter throughput at concurrency 20 at least 2x proxsmtpd',
    check(f) {
      const s = f.median('c20', 'smtpsiftd', 'msgs/s');
      const p = f.median('c20', 'proxsmtpd', 'msgs/s');
      if (s === undefined || p === undefined) return undefined;
      return { pass: s >= 2 * p, detail: `${s.toFixed(0)} vs ${p.toFixed(1)} msg/s = ${(s / p).toFixed(1)}x` };
    },
  },
  {
    issue: 3,
    text: '`cat` filter (pipe) throughput at concurrency 20 at least 1.5x proxsmtpd (issue 7 too)',
    check(f) {
      const s = f.median('c20-cat', 'smtpsiftd-cat', 'msgs/s');
      const p = f.median('c20-cat', 'proxsmtpd-cat', 'msgs/s');
      if (s === undefined || p === undefined) return undefined;
      return { pass: s >= 1.5 * p, detail: `${s.toFixed(0)} vs ${p.toFixed(1)} msg/s = ${(s / p).toFixed(2)}x` };
    },
  },
  {
    issue: 2,
    text: "'.' to 250 median under 2 ms",
    check(f) {
      const s = f.median('dot', 'smtpsiftd', "'.'->250 median");
      if (s === undefined) return undefined;
      return { pass: s < 2, detail: `${s.toFixed(2)} ms` };
    },
  },
  {
    issue: 2,
    text: '50 MB message with the daemon peak RSS under 100 MB (worst repetition)',
    check(f) {
      const s = f.max('big50', 'smtpsiftd', 'peak RSS');
      if (s === undefined) return undefined;
      return { pass: s < 100, detail: `${s.toFixed(1)} MB` };
    },
  },
];

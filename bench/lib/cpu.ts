// The machine's CPU time from /proc/stat, for the one condition the benchmark cannot set: on
// a virtual machine the host gives some of the vCPUs' time to others ("steal"). Every hop of
// a message between processes is a wake-up on a vCPU, and on this VM the latencies of every
// target, direct included, rose 2-4x while steal went from under 10% to over 30%. Each
// measurement records the steal of its moments, so that a figure can be read with it.

import { readFileSync } from 'node:fs';

export interface CpuTimes {
  /** Clock ticks the host took from this machine's vCPUs. */
  readonly steal: number;
  /** All clock ticks: user, nice, system, idle, iowait, irq, softirq and steal. */
  readonly total: number;
}

/** The machine's CPU times so far (all CPUs); zeros where /proc/stat cannot be read. */
export function cpuTimes(): CpuTimes {
  let line: string;
  try {
    line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0] ?? '';
  } catch {
    return { steal: 0, total: 0 };
  }
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { steal: f[7] ?? 0, total: f.reduce((a, b) => a + b, 0) };
}

/** The percentage of CPU time stolen between two readings (undefined if no time passed). */
export function stealPercent(from: CpuTimes, to: CpuTimes): number | undefined {
  const total = to.total - from.total;
  return total > 0 ? (100 * (to.steal - from.steal)) / total : undefined;
}

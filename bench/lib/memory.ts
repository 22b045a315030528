// Peak resident memory of a process and all its descendants (a filter's children count
// too, issue 7), sampled from /proc while a measurement runs. The kernel's own high-water
// mark (VmHWM, reset through clear_refs where we may) catches what falls between samples
// for the daemon process itself.

import { readFileSync, writeFileSync } from 'node:fs';

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m?.[1] === undefined ? 0 : Number(m[1]);
  } catch {
    return 0; // gone
  }
}

function children(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').split(/\s+/)) {
      if (tid !== '') out.push(Number(tid));
    }
  } catch {
    // gone, or no children file
  }
  return out;
}

/** A process and all its descendants, parents first. */
export function processTree(pid: number): number[] {
  return [pid, ...children(pid).flatMap(processTree)];
}

/** RSS of the whole process tree, in kB. */
export function treeRssKb(pid: number): number {
  let sum = statusKb(pid, 'VmRSS');
  for (const c of children(pid)) sum += treeRssKb(c);
  return sum;
}

export class RssSampler {
  private peakKb = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly baselineKb: number;

  constructor(
    private readonly pid: number,
    intervalMs = 5,
  ) {
    try {
      // "5": reset the peak RSS to the current RSS (proc(5), Linux 4.0 and later).
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
    } catch {
      // not allowed: VmHWM then covers the life of the process, and only samples count
    }
    this.baselineKb = treeRssKb(pid);
    this.peakKb = this.baselineKb;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    this.peakKb = Math.max(this.peakKb, treeRssKb(this.pid));
  }

  /** Stops sampling; the peak in kB. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    const kids = children(this.pid).reduce((s, c) => s + treeRssKb(c), 0);
    return Math.max(this.peakKb, statusKb(this.pid, 'VmHWM') + kids);
  }
}

// Summaries of repeated measurements: the median, and the spread as min-max.

export interface Summary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

export function summarize(values: readonly number[]): Summary | undefined {
  if (values.length === 0) return undefined;
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  const median = v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  return { median, min: v[0] as number, max: v[v.length - 1] as number, n: v.length };
}

/** A number with about three significant digits, for tables. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  // Counts (connections held, messages served) stay whole.
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

/** "123 (110-130)", or "n/a". */
export function fmtSummary(s: Summary | undefined, unit = ''): string {
  if (s === undefined) return 'n/a';
  const u = unit ? ` ${unit}` : '';
  return s.n === 1 ? `${fmt(s.median)}${u}` : `${fmt(s.median)}${u} (${fmt(s.min)}-${fmt(s.max)})`;
}

// The output of `smtpsift stats` and `smtpsift logalyze`: one shape for both, as a table
// sorted by bytes with human units, as JSON for scripts, or as a horizontal bar chart.

export interface ReportRow {
  readonly key: string;
  readonly bytes: number;
  readonly messages: number;
}

export interface Report {
  readonly by: string;
  readonly rows: readonly ReportRow[];
  /**
   * Every message once: the sum of the rows, or the caller's own count where one message
   * can be in several rows (stats --by domain: a message to two domains is in both).
   */
  readonly total: { readonly bytes: number; readonly messages: number };
}

/** Largest first; equal bytes by key, so the output is stable. `total` defaults to the rows' sum. */
export function report(by: string, rows: readonly ReportRow[], total?: { readonly bytes: number; readonly messages: number }): Report {
  const sorted = [...rows].sort((a, b) => b.bytes - a.bytes || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const sum = sorted.reduce((t, r) => ({ bytes: t.bytes + r.bytes, messages: t.messages + r.messages }), { bytes: 0, messages: 0 });
  return { by, rows: sorted, total: total ?? sum };
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; bytes below 1024 stay exact. */
export function humanBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

export function formatJson(r: Report): string {
  return `${JSON.stringify({ by: r.by, rows: r.rows.map((x) => ({ key: x.key, bytes: x.bytes, messages: x.messages })), total: r.total })}\n`;
}

export function formatTable(r: Report): string {
  const lines: string[][] = [[r.by, 'messages', 'bytes']];
  for (const x of r.rows) lines.push([x.key, String(x.messages), humanBytes(x.bytes)]);
  lines.push(['total', String(r.total.messages), humanBytes(r.total.bytes)]);
  const w = [0, 1, 2].map((i) => Math.max(...lines.map((l) => (l[i] ?? '').length)));
  return lines.map((l) => `${(l[0] ?? '').padEnd(w[0] ?? 0)}  ${(l[1] ?? '').padStart(w[1] ?? 0)}  ${(l[2] ?? '').padStart(w[2] ?? 0)}`.trimEnd()).join('\n') + '\n';
}

/** Bars scaled to the largest row, `width` characters at most; a non-zero row has at least one. */
export function formatChart(r: Report, width = 50): string {
  if (r.rows.length === 0) return `no traffic (by ${r.by})\n`;
  const max = Math.max(...r.rows.map((x) => x.bytes));
  const kw = Math.max(...r.rows.map((x) => x.key.length));
  return (
    r.rows
      .map((x) => {
        const n = max === 0 ? 0 : Math.max(x.bytes > 0 ? 1 : 0, Math.round((x.bytes / max) * width));
        return `${x.key.padEnd(kw)} |${'#'.repeat(n)} ${humanBytes(x.bytes)} (${x.messages} msg)`;
      })
      .join('\n') + '\n'
  );
}

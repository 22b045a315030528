// The OPTIONS section of man/smtpsiftd.conf.5 is generated from the schema table, so the
// page cannot drift from the parser (issue #2: "one schema table ... drives ...
// man/smtpsiftd.conf.5"). The rest of the page is written by hand; only the lines between
// the two marker comments belong to this tool.
//
//   node dist/src/tools/man.js            rewrite the section in place
//   node dist/src/tools/man.js --check    exit 1 if the page is out of date (CI, tests)

import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OPTION_KEYS, SCHEMA, type OptionRow } from '../config/schema.js';

export const BEGIN_MARK = '.\\" BEGIN OPTIONS (generated from src/config/schema.ts)';
export const END_MARK = '.\\" END OPTIONS';

/** The page, found from dist/src/tools/ (built) or src/tools/ (source) alike. */
export const CONF_PAGE = fileURLToPath(
  new URL(import.meta.url.includes('/dist/') ? '../../../man/smtpsiftd.conf.5' : '../../man/smtpsiftd.conf.5', import.meta.url),
);

/** Escapes for roff: `\` to `\e`, `-` to `\-`, anything outside printable ASCII to `\[uXXXX]`. */
function escape(text: string): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '\\') out += '\\e';
    else if (ch === '-') out += '\\-';
    else if (cp === 9) out += ' ';
    else if (cp < 0x20 || cp > 0x7e) out += `\\[u${cp.toString(16).toUpperCase().padStart(4, '0')}]`;
    else out += ch;
  }
  return out;
}

/**
 * Text for roff text lines. A backslash would start an escape, so it becomes `\e`; a
 * hyphen becomes `\-` so that option values and flags stay ASCII hyphen-minus when
 * rendered; characters outside printable ASCII become `\[uXXXX]`; and a line that would
 * start with `.` or `'` (a request to roff) is protected with the zero-width `\&`.
 * Lines are trimmed: leading space would make roff break the line there.
 */
export function roffText(text: string): string {
  return text
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '') // a blank text line is a stray vertical space in roff
    .map((line) => {
      const out = escape(line.trim());
      return /^[.']/.test(out) ? `\\&${out}` : out;
    })
    .join('\n');
}

/** One argument of a roff macro: escaped, kept as it is otherwise, quoted (`"` doubled). */
export function roffArg(text: string): string {
  return `"${escape(text.replace(/[\r\n]+/g, ' ')).replace(/"/g, '""')}"`;
}

function entry(r: OptionRow<unknown>): string[] {
  const lines = ['.TP', `.BI ${roffArg(`${r.name}: `)} ${roffArg(r.arg)}`, roffText(r.doc)];
  lines.push('.br');
  lines.push(r.defaultText === '' ? 'Default: none.' : `Default: \\fB${roffText(r.defaultText)}\\fR.`);
  if (r.notBuilt !== undefined) {
    lines.push('.br');
    lines.push('Not supported yet: a value that needs the missing feature is a start\\-up error (see');
    lines.push('.BR COMPATIBILITY ).');
  }
  return lines;
}

/** The generated lines, markers included, each ending in a newline. */
export function renderOptions(): string {
  const body = OPTION_KEYS.flatMap((key) => entry(SCHEMA[key] as OptionRow<unknown>));
  const note = '.\\" Do not edit by hand: change src/config/schema.ts, then run node dist/src/tools/man.js';
  return [BEGIN_MARK, note, ...body, END_MARK].map((l) => `${l}\n`).join('');
}

export class MarkerError extends Error {}

/** The page with its generated section replaced by a fresh rendering. */
export function updatePage(page: string): string {
  const begin = page.indexOf(`${BEGIN_MARK}\n`);
  const endAt = page.indexOf(`${END_MARK}\n`, begin);
  if (begin < 0 || endAt < 0 || (begin > 0 && page[begin - 1] !== '\n') || page[endAt - 1] !== '\n') {
    throw new MarkerError(`expected the lines '${BEGIN_MARK}' and '${END_MARK}', in that order`);
  }
  return page.slice(0, begin) + renderOptions() + page.slice(endAt + END_MARK.length + 1);
}

export interface CheckResult {
  readonly upToDate: boolean;
  /** Why not, for a message. */
  readonly problem?: string;
}

/** Whether the page's generated section matches the schema. Reads only; no subprocess. */
export function checkPage(path: string = CONF_PAGE): CheckResult {
  let page: string;
  try {
    page = readFileSync(path, 'utf8');
  } catch (e) {
    return { upToDate: false, problem: `cannot read it: ${(e as Error).message}` };
  }
  try {
    return updatePage(page) === page
      ? { upToDate: true }
      : { upToDate: false, problem: 'the OPTIONS section does not match src/config/schema.ts' };
  } catch (e) {
    if (!(e instanceof MarkerError)) throw e;
    return { upToDate: false, problem: e.message };
  }
}

function main(args: string[]): number {
  const check = args.includes('--check');
  const files = args.filter((a) => a !== '--check');
  if (files.length > 1 || files.some((a) => a.startsWith('-'))) {
    process.stderr.write('usage: node dist/src/tools/man.js [--check] [man/smtpsiftd.conf.5]\n');
    return 2;
  }
  const path = files[0] ?? CONF_PAGE;
  if (check) {
    const r = checkPage(path);
    if (r.upToDate) return 0;
    process.stderr.write(`${path}: ${r.problem ?? 'out of date'}; run: node dist/src/tools/man.js\n`);
    return 1;
  }
  try {
    const page = readFileSync(path, 'utf8');
    const next = updatePage(page);
    if (next !== page) writeFileSync(path, next);
    process.stdout.write(`${path}: ${next === page ? 'already up to date' : 'OPTIONS section regenerated'}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`${path}: ${(e as Error).message}\n`);
    return 2;
  }
}

/** Run as a program, not imported (by the test). */
function isMain(): boolean {
  const invoked = process.argv[1];
  try {
    return invoked !== undefined && realpathSync(invoked) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) process.exitCode = main(process.argv.slice(2));

// The man pages describe what exists (issue #2): every option of the schema is in
// smtpsiftd.conf(5), its generated OPTIONS section is current, smtpsiftd(8) documents every
// flag, and both pages render without a groff warning.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../src/config/load.js';
import { DEFAULT_CONFIG, OPTION_KEYS, SCHEMA, type OptionRow } from '../src/config/schema.js';
import { DRAIN_SECONDS } from '../src/server/daemon.js';
import { MAX_COMMAND_LINE } from '../src/session/session.js';
import { BEGIN_MARK, CONF_PAGE, END_MARK, checkPage, roffArg, roffText, updatePage } from '../src/tools/man.js';

const DAEMON_PAGE = fileURLToPath(new URL('../../man/smtpsiftd.8', import.meta.url));
const conf = readFileSync(CONF_PAGE, 'utf8');
const daemon = readFileSync(DAEMON_PAGE, 'utf8');

/** The source of one `.SH` section, up to the next. */
function section(page: string, title: string): string {
  const start = page.indexOf(`\n.SH ${title}\n`);
  assert.ok(start >= 0, `no .SH ${title}`);
  const end = page.indexOf('\n.SH ', start + 1);
  return page.slice(start, end < 0 ? undefined : end);
}

test('every schema option has an entry in smtpsiftd.conf(5)', () => {
  const options = section(conf, 'OPTIONS');
  for (const key of OPTION_KEYS) {
    const name = SCHEMA[key].name;
    assert.ok(options.includes(`.BI "${name}: "`), `${name} is missing from the OPTIONS of ${CONF_PAGE}`);
  }
});

test('the generated OPTIONS section of smtpsiftd.conf(5) is up to date', () => {
  const r = checkPage();
  assert.ok(r.upToDate, `${CONF_PAGE}: ${r.problem}; run: node dist/src/tools/man.js`);
});

test('every option whose feature is not built is listed under COMPATIBILITY', () => {
  const compat = section(conf, 'COMPATIBILITY');
  for (const key of OPTION_KEYS) {
    const r = SCHEMA[key] as OptionRow<unknown>;
    if (r.notBuilt === undefined) continue;
    assert.ok(compat.includes(`.B ${r.name}\n`), `${r.name} is not listed as unsupported under COMPATIBILITY`);
    // Its default never trips the hook, or every file would fail.
    assert.equal(r.notBuilt(r.defaultText === '' ? undefined : r.parse(r.defaultText)), undefined, r.name);
  }
});

test('the example configuration in smtpsiftd.conf(5) is valid', () => {
  const example = section(conf, 'EXAMPLE');
  const m = /\n\.EX\n(# \/etc\/smtpsiftd\.conf\n[\s\S]*?)\.EE\n/.exec(example);
  assert.ok(m?.[1], 'no example file in EXAMPLE');
  const text = m[1].replace(/\\-/g, '-').replace(/\\e/g, '\\');
  const config = parseConfig(text, 'example');
  assert.equal(config.user, 'smtpsift');
});

test('smtpsiftd(8) documents each flag, and the figures match the code', () => {
  const options = section(daemon, 'OPTIONS');
  for (const flag of ['d', 'f', 'p', 'v']) {
    assert.match(options, new RegExp(`^\\.TP\\n\\.BI? \\\\-${flag}\\b`, 'm'), `-${flag} has no .TP entry in OPTIONS`);
  }
  assert.match(section(daemon, 'SIGNALS AND SHUTDOWN'), new RegExp(`\\b${DRAIN_SECONDS} seconds\\b`));
  assert.match(section(daemon, 'RELAYING'), new RegExp(`\\b${MAX_COMMAND_LINE} bytes\\b`));
  assert.ok(daemon.includes(DEFAULT_CONFIG) && conf.includes(DEFAULT_CONFIG), DEFAULT_CONFIG);
});

test('roff escaping: backslashes, hyphens, leading dots and quotes, quotes in arguments', () => {
  assert.equal(roffText('a\\b -x'), 'a\\eb \\-x');
  assert.equal(roffText('.start\n\'quote\nplain'), "\\&.start\n\\&'quote\nplain");
  assert.equal(roffText('  .indented\n\n'), '\\&.indented');
  assert.equal(roffText('caf\u00e9'), 'caf\\[u00E9]');
  assert.equal(roffArg('Name: '), '"Name: "');
  assert.equal(roffArg('say "hi"'), '"say ""hi"""');
});

test('updatePage replaces only the text between the markers, and needs both', () => {
  const page = `.TH X 5\n.SH OPTIONS\n${BEGIN_MARK}\nOLD GENERATED TEXT\n${END_MARK}\n.SH SEE ALSO\n`;
  const next = updatePage(page);
  assert.ok(next.startsWith(`.TH X 5\n.SH OPTIONS\n${BEGIN_MARK}\n`));
  assert.ok(next.endsWith(`${END_MARK}\n.SH SEE ALSO\n`));
  assert.ok(!next.includes('OLD GENERATED TEXT'));
  assert.equal(updatePage(next), next);
  assert.throws(() => updatePage('.TH X 5\n'), /BEGIN OPTIONS/);
  assert.throws(() => updatePage(`${END_MARK}\n${BEGIN_MARK}\n`), /in that order/);
});

const man = spawnSync('man', ['--version'], { encoding: 'utf8' });
test('both pages render without warnings (man --warnings)', { skip: man.status !== 0 && 'man is not installed' }, () => {
  for (const page of [DAEMON_PAGE, CONF_PAGE]) {
    for (const width of ['80', '120']) {
      const r = spawnSync('man', ['--warnings', '-l', page], {
        encoding: 'utf8',
        env: { ...process.env, MANWIDTH: width, MANPAGER: 'cat', PAGER: 'cat' },
      });
      assert.equal(r.status, 0, `${page}: ${r.stderr}`);
      assert.equal(r.stderr, '', `${page} at width ${width}`);
      assert.ok(r.stdout.length > 1000, `${page} rendered to almost nothing`);
    }
  }
});

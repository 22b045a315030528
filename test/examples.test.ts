// Issue 3: every script in examples/filters/ works. Each runs as FilterCommand under the real
// daemon, in front of a recording upstream, and the test checks what the client was told and
// what the upstream got. spamassassin.sh and clamav.sh run against stub `spamc` and
// `clamdscan` executables put first on the daemon's PATH; the stubs keep the real tools'
// exit statuses (spamc -E: 0 ham, 1 spam, 69 spamd unreachable with -x; clamdscan: 0 clean,
// 1 virus, 2 error), so the scripts meet every outcome they must handle.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { unstuff, verbs } from './helpers/relay.js';
import { spoolFiles, waitFor } from './helpers/process.js';

const T = { timeout: 30_000 };
const EXAMPLES = fileURLToPath(new URL('../../examples/filters/', import.meta.url));

/** Which scripts the tests below ran; the last test checks that none was left out. */
const used = new Set<string>();
function example(name: string): string {
  used.add(name);
  return join(EXAMPLES, name);
}

/** spamc(1) as far as the example relies on it. The files next to it play spamd's state. */
const SPAMC = `#!/bin/sh
here=\${0%/*}
printf '%s\\n' "$*" > "$here/spamc.args"
cat > "$here/spamc.in"
E=0; X=0
for a in "$@"; do case $a in -E) E=1 ;; -x) X=1 ;; esac; done
if [ -e "$here/spamd-hangs" ]; then sleep 30; fi
if [ -e "$here/spamd-down" ]; then
    echo "connection attempt to spamd aborted after 3 retries" >&2
    if [ $X = 1 ]; then exit 69; fi
    cat "$here/spamc.in"; exit 0
fi
if grep -qF 'GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL' "$here/spamc.in"; then
    printf 'X-Spam-Flag: YES\\r\\nX-Spam-Status: Yes, score=1000.0\\r\\n'; cat "$here/spamc.in"
    if [ $E = 1 ]; then exit 1; fi; exit 0
fi
printf 'X-Spam-Status: No, score=0.1\\r\\n'; cat "$here/spamc.in"
`;

/** clamdscan(1): results on stdout, 0 clean, 1 virus, 2 error. */
const CLAMDSCAN = `#!/bin/sh
here=\${0%/*}
printf '%s\\n' "$*" > "$here/clamdscan.args"
for file in "$@"; do :; done
if [ -e "$here/clamd-down" ]; then
    echo "ERROR: Could not connect to clamd on LocalSocket /var/run/clamav/clamd.ctl: No such file or directory" >&2
    exit 2
fi
if ! [ -r "$file" ]; then echo "$file: Access denied. ERROR"; exit 2; fi
if grep -qF 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' "$file"; then echo "$file: Win.Test.EICAR_HDB-1 FOUND"; exit 1; fi
echo "$file: OK"
`;

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

interface Sent {
  /** The client's final reply to the message, without its CRLF. */
  readonly reply: string;
  /** What the upstream got for it, un-stuffed; undefined when nothing was delivered. */
  readonly delivered: string | undefined;
  /** The verbs the upstream received during this session. */
  readonly upstream: string[];
}

interface Example {
  readonly up: RecordingUpstream;
  readonly d: Daemon;
  /** The directory of the stubs (first on the daemon's PATH). */
  readonly bin: string;
  /** One session: EHLO, MAIL, RCPT, DATA with `body`, QUIT. */
  send(body: string, from?: string): Promise<Sent>;
}

/**
 * The daemon with `config`, its environment extended by `env`, and a `bin` directory of
 * stubs first on its PATH. After the test, nothing may be left in TempDirectory.
 */
async function withExample(
  config: Record<string, string>,
  fn: (x: Example) => Promise<void>,
  env: Record<string, string> = {},
): Promise<void> {
  const t = tempDir('smtpsift-examples-');
  const bin = join(t.dir, 'bin');
  mkdirSync(bin);
  for (const [name, text] of [['spamc', SPAMC], ['clamdscan', CLAMDSCAN]] as const) {
    writeFileSync(join(bin, name), text);
    chmodSync(join(bin, name), 0o755);
  }
  const vars = { ...env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` };
  const up = await RecordingUpstream.start();
  let d: Daemon | undefined;
  try {
    d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, ...config }, ['-d', '4'], {
      // env(1) execs the daemon, so the PID stays the daemon's.
      wrap: (argv) => ['/usr/bin/env', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ...argv],
    });
    const daemon = d;
    const send = async (body: string, from = 'alice@example.org'): Promise<Sent> => {
      const sessionsBefore = up.sessions.length;
      const c = await RawClient.connect(daemon.port);
      try {
        assert.match(await c.reply(), /^220 /);
        assert.match(await c.command('EHLO client.test'), /^250[ -]/);
        assert.match(await c.command(`MAIL FROM:<${from}>`), /^250 /);
        assert.match(await c.command('RCPT TO:<bob@example.net>'), /^250 /);
        assert.match(await c.command('DATA'), /^354 /);
        c.send(`${body.replace(/^\./gm, '..')}.\r\n`);
        const reply = (await c.reply(10_000)).replace(/\r\n$/, '');
        assert.match(await c.command('QUIT'), /^221 /);
        const s = up.sessions[sessionsBefore];
        assert.ok(s, 'no upstream session');
        const wire = s.messages[0];
        return { reply, delivered: wire && unstuff(wire).toString('latin1'), upstream: verbs(s.commands) };
      } finally {
        c.close();
      }
    };
    await fn({ up, d, bin, send });
    // Scripts clean up after themselves: no temp file in TMPDIR, nothing in the spool.
    // (A filter killed at FilterTimeout cleans up after the client's reply: give it a moment.)
    const strays = (): string[] => [...spoolFiles(daemon.spoolDir), ...readdirSync(daemon.spoolDir).filter((n) => !n.startsWith('smtpsiftd-'))];
    await waitFor(() => strays().length === 0, 'an empty spool and TempDirectory', 2000).catch(() => {
      assert.deepEqual(strays(), [], 'files left in the spool or TempDirectory');
    });
  } finally {
    await d?.stop();
    await up.close();
    t.remove();
  }
}

const plain = (subject: string, body: string): string => `From: alice@example.org\r\nTo: bob@example.net\r\nSubject: ${subject}\r\n\r\n${body}`;

/** The filter decided: the client's reply, nothing delivered, the upstream told RSET. */
function assertRefused(sent: Sent, reply: string | RegExp): void {
  if (typeof reply === 'string') assert.equal(sent.reply, reply);
  else assert.match(sent.reply, reply);
  assert.equal(sent.delivered, undefined, 'delivered anyway');
  assert.ok(!sent.upstream.includes('DATA'), 'DATA went upstream');
  assert.ok(sent.upstream.includes('RSET'), 'no RSET upstream');
}

const QUEUED = /^250 2\.0\.0 Ok: queued as Q\d+$/;

test('add-header.sh: the header is at the top of the delivered message', T, async () => {
  await withExample({ FilterCommand: example('add-header.sh') }, async ({ send }) => {
    const msg = plain('hello', 'Hi Bob.\r\n.\r\n');
    const sent = await send(msg);
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, `X-Filtered-By: smtpsift example add-header.sh\r\n${msg}`);
  });
});

test('reject-pattern.sh: 554 5.7.1 on the pattern, any case; other mail delivered unchanged', T, async () => {
  await withExample({ FilterCommand: example('reject-pattern.sh') }, async ({ send }) => {
    assertRefused(await send(plain('offer', 'Buy CHEAP pills now!\r\n')), '554 5.7.1 Message rejected: forbidden content');
    const clean = plain('lunch', '-e and -n are not options here; neither is --.\r\n');
    const sent = await send(clean);
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, clean);
  });
});

test('reject-pattern.sh: PATTERN in the daemon\'s environment replaces the default', T, async () => {
  await withExample(
    { FilterCommand: example('reject-pattern.sh') },
    async ({ send }) => {
      assertRefused(await send(plain('x', 'a $(rm -rf /) pattern\r\n')), '554 5.7.1 Message rejected: forbidden content');
      assert.match((await send(plain('x', 'buy cheap pills\r\n'))).reply, QUEUED);
    },
    { PATTERN: '$(rm -rf /)' },
  );
});

test('tempfail.sh: 451, nothing delivered', T, async () => {
  await withExample({ FilterCommand: example('tempfail.sh') }, async ({ send }) => {
    assertRefused(await send(plain('x', 'y\r\n')), /^451 4\.7\.1 /);
  });
});

test('drop.sh: a blocked sender gets 250 and nothing is delivered; others pass', T, async () => {
  await withExample({ FilterCommand: example('drop.sh') }, async ({ send, up }) => {
    assertRefused(await send(plain('x', 'spam\r\n'), 'mass@blocked.example'), '250 2.0.0 Ok: dropped');
    assert.equal(up.messages.length, 0);
    const msg = plain('x', 'fine\r\n');
    const sent = await send(msg);
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, msg);
  });
});

test('file-edit.sh (FilterType file): the subject is tagged, the body untouched', T, async () => {
  await withExample({ FilterCommand: example('file-edit.sh'), FilterType: 'file' }, async ({ send }) => {
    const sent = await send('From: alice@example.org\r\nsubject: Hello\r\n\r\nSubject: in the body\r\n');
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, 'From: alice@example.org\r\nSubject: [filtered] Hello\r\n\r\nSubject: in the body\r\n');
  });
});

test('spamassassin.sh: ham is delivered as spamc returns it, spam gets 554, spamd down gets 451', T, async () => {
  await withExample({ FilterCommand: example('spamassassin.sh') }, async ({ send, bin }) => {
    const ham = plain('ham', 'Lunch at noon?\r\n');
    const sent = await send(ham);
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, `X-Spam-Status: No, score=0.1\r\n${ham}`);
    // -E to learn spam from the exit status, -x to fail rather than pass mail unchecked.
    assert.equal(readFileSync(join(bin, 'spamc.args'), 'utf8'), '-E -x\n');

    assertRefused(await send(plain('spam', `${GTUBE}\r\n`)), '554 5.7.1 Message rejected as spam');

    writeFileSync(join(bin, 'spamd-down'), '');
    assertRefused(await send(ham), '451 4.7.1 Spam scanner unavailable, try again later');
  });
});

test('spamassassin.sh: a hung spamd is a 451 at FilterTimeout, and the temp file is removed', T, async () => {
  await withExample({ FilterCommand: example('spamassassin.sh'), FilterTimeout: '1' }, async ({ send, bin }) => {
    writeFileSync(join(bin, 'spamd-hangs'), '');
    const started = Date.now();
    assertRefused(await send(plain('ham', 'x\r\n')), '451 Local Error');
    assert.ok(Date.now() - started < 3000, 'the reply came late');
    // withExample checks that TempDirectory holds no temp file of the script's.
  });
});

test('clamav.sh (FilterType file): clean mail delivered, a virus gets 554 with its name, clamd down gets 451', T, async () => {
  await withExample({ FilterCommand: example('clamav.sh'), FilterType: 'file' }, async ({ send, bin }) => {
    const clean = plain('clean', 'Nothing to see.\r\n');
    const sent = await send(clean);
    assert.match(sent.reply, QUEUED);
    assert.equal(sent.delivered, clean);
    // The spool file is private (0600): clamd gets it as an open descriptor.
    assert.match(readFileSync(join(bin, 'clamdscan.args'), 'utf8'), /^--no-summary --fdpass \/\S+\n$/);

    assertRefused(await send(plain('virus', `${EICAR}\r\n`)), '554 5.7.1 Virus found: Win.Test.EICAR_HDB-1');

    writeFileSync(join(bin, 'clamd-down'), '');
    assertRefused(await send(clean), '451 4.7.1 Virus scanner unavailable, try again later');
  });
});

test('every script in examples/filters/ is used by a test above', () => {
  const scripts = readdirSync(EXAMPLES).filter((n) => n.endsWith('.sh')).sort();
  assert.deepEqual([...used].sort(), scripts);
});

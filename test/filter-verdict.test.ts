// Issue 3, "The verdict": how the filter's exit status and its last stderr line become the
// client's reply (spec §13.4, with the deliberate differences of design.md), what the
// upstream gets (the message, or RSET and nothing), and that the session goes on.
// One daemon per case; its FilterCommand picks a script by the sender's local part, so that
// the next message of the same session (from accept@) is filtered by a plain `cat`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { verbs } from './helpers/relay.js';
import { sendMessage, withFilter, type Scripts } from './helpers/filter.js';
import { run, spoolFiles, waitFor } from './helpers/process.js';
import type { Relay } from './helpers/relay.js';

const T = { timeout: 20_000 };
const BODY = 'Subject: verdict\r\n\r\nbody line\r\n';
const NEXT = 'Subject: next\r\n\r\nthe next message\r\n';
const LOCAL_ERROR = '451 Local Error\r\n';

/** The dispatcher: `case@...` runs `case.sh` of the test's directory, in place of the shell. */
const dispatch = (sc: Scripts): string => `exec /bin/sh ${sc.dir}/"\${SENDER%%@*}".sh`;

function withCases(cases: Record<string, string>, extra: Record<string, string>, fn: (r: Relay, sc: Scripts) => Promise<void>): Promise<void> {
  return withFilter(
    {
      config: (sc) => {
        sc.script('accept.sh', 'cat');
        for (const [name, body] of Object.entries(cases)) sc.script(`${name}.sh`, body);
        return { FilterCommand: dispatch(sc), ...extra };
      },
    },
    fn,
  );
}

/**
 * After a verdict that is not an accept: the upstream got RSET in place of DATA and nothing
 * was delivered; then the next message of the same session is delivered as usual.
 */
async function assertRsetAndSessionGoesOn({ up, d }: Relay, c: Awaited<ReturnType<Relay['session']>>): Promise<void> {
  assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'RSET']);
  assert.equal(up.messages.length, 0, 'nothing delivered');
  assert.deepEqual(spoolFiles(d.spoolDir), []);
  assert.equal(await sendMessage(c, 'accept@example.org', ['b@example.net'], NEXT), '250 2.0.0 Ok: queued as Q1\r\n');
  assert.deepEqual(up.messages.map((m) => m.toString('latin1')), [NEXT]);
  assert.deepEqual(verbs(up.commands).slice(4), ['MAIL', 'RCPT', 'DATA']);
}

const LONG_CODE = `554 5.7.1 ${'c'.repeat(390)}`;
const LONG_TEXT = 't'.repeat(400);

/** name → [script, the client's reply]. */
const REFUSALS: Record<string, [string, string]> = {
  reject554: ["cat > /dev/null; echo 'some noise first' >&2; echo '554 5.7.1 Virus found' >&2; exit 1", '554 5.7.1 Virus found\r\n'],
  tempfail451: ["echo '451 4.7.1 Try again later' >&2; exit 75", '451 4.7.1 Try again later\r\n'],
  drop250: ["cat > /dev/null; echo '250 2.0.0 Dropped, quietly' >&2; exit 1", '250 2.0.0 Dropped, quietly\r\n'],
  plaintext: ["echo 'Spam detected' >&2; exit 1", '550 Content Rejected; Spam detected\r\n'],
  dottedtext: ["echo '5.7.1 Policy' >&2; exit 2", '550 Content Rejected; 5.7.1 Policy\r\n'],
  nothing: ['exit 1', '550 Content Rejected; Content Rejected\r\n'],
  pieces: ["printf '554 5.7.1 ' >&2; sleep 0.3; printf 'two parts' >&2; exit 1", '554 5.7.1 two parts\r\n'],
  trailing: ["printf 'first line\\n554 second\\n\\n  \\n\\t\\n' >&2; exit 1", '554 second\r\n'],
  leading: ["printf '  \\t 554 5.7.1 leading blanks   \\n' >&2; exit 1", '554 5.7.1 leading blanks\r\n'],
  longcode: [`echo '${LONG_CODE}' >&2; exit 1`, `${LONG_CODE.slice(0, 255)}\r\n`],
  longtext: [`echo '${LONG_TEXT}' >&2; exit 1`, `550 Content Rejected; ${LONG_TEXT.slice(0, 255)}\r\n`],
  // The shell itself killed by a signal.
  killed: ['cat > /dev/null; kill -9 $$', LOCAL_ERROR],
  // The program under the shell killed: dash says "Killed" and exits 137. A crash, not a 550.
  childkilled: ["/bin/sh -c 'kill -9 $$'; exit $?", LOCAL_ERROR],
  // Command not found: dash exits 127 ("not found" on stderr). A broken filter defers.
  notfound: ['no-such-filter-command-smtpsift', LOCAL_ERROR],
};

for (const [name, [script, expected]] of Object.entries(REFUSALS)) {
  test(`verdict ${name}: the client gets ${JSON.stringify(expected.slice(0, 40))}…, the upstream RSET, the session goes on`, T, async () => {
    await withCases({ [name]: script }, {}, async (r) => {
      const c = await r.session();
      assert.equal(await sendMessage(c, `${name}@example.org`, ['b@example.net'], BODY), expected);
      await assertRsetAndSessionGoesOn(r, c);
    });
  });
}

test('verdict: exit 0 delivers the output and the upstream reply is the client\'s; stderr is ignored, even a 554 line', T, async () => {
  await withCases({ noisy: "cat; echo '554 5.7.1 ignored' >&2; exit 0" }, {}, async ({ session, up }) => {
    const c = await session();
    assert.equal(await sendMessage(c, 'noisy@example.org', ['b@example.net'], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.deepEqual(up.messages.map((m) => m.toString('latin1')), [BODY]);
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'DATA']);
  });
});

test('verdict: the upstream\'s own refusal after an accepted filter is relayed verbatim', T, async () => {
  await withFilter(
    { upstream: { afterData: () => '554 5.7.1 upstream says no' }, config: () => ({ FilterCommand: 'cat' }) },
    async ({ session }) => {
      const c = await session();
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), '554 5.7.1 upstream says no\r\n');
    },
  );
});

test('verdict: a FilterCommand shell killed by a signal (kill -9 $$ inline) is 451 Local Error', T, async () => {
  await withFilter({ config: () => ({ FilterCommand: 'cat > /dev/null; kill -9 $$' }) }, async ({ session, up }) => {
    const c = await session();
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), LOCAL_ERROR);
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'RSET']);
  });
});

/** The processes (pid → cmdline) whose process group is `pgid`. */
function groupMembers(pgid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && Number(fields[2]) === pgid) out.set(Number(name), readFileSync(`/proc/${name}/cmdline`, 'latin1').replace(/\0/g, ' '));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** PIDs of live processes whose command line matches `pattern` (pgrep -f). */
async function pgrep(pattern: string): Promise<number[]> {
  const r = await run('pgrep', ['-f', pattern], 5000);
  return r.stdout.split('\n').filter((l) => l !== '').map(Number);
}

test('a program the filter left running in the background is killed when its shell ends (it could still write to the message); the message is delivered', T, async () => {
  const token = String(Date.now() % 1_000_000).padStart(6, '0');
  const marker = `30\\.${token}`;
  // The background program's stdout is the filter's output: the message about to go upstream.
  const background = `echo $$ > "\${0%/*}/bg.pid"; ( sleep 30.${token}; echo INJECTED ) & cat`;
  const leftovers: number[] = [];
  try {
    await withCases({ background }, {}, async ({ session, up }, sc) => {
      const c = await session();
      assert.equal(await sendMessage(c, 'background@example.org', ['b@example.net'], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
      const pid = Number(sc.read('bg.pid'));
      assert.ok(pid > 0, 'the filter recorded its pid');
      await waitFor(() => groupMembers(pid).size === 0, `the filter's process group ${pid} to be empty`, 2000).catch((e: unknown) => {
        leftovers.push(...groupMembers(pid).keys());
        throw e;
      });
      assert.deepEqual(await pgrep(marker), [], 'the background sleep does not survive');
      assert.deepEqual(up.messages.map((m) => m.toString('latin1')), [BODY]);
    });
  } finally {
    for (const pid of new Set([...leftovers, ...(await pgrep(marker))])) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

test('FilterTimeout: 451 within about a second of the deadline, the whole process group killed (grandchild too), RSET, body never read as commands', T, async () => {
  const token = String(Date.now() % 1_000_000).padStart(6, '0');
  const marker = `6[01]\\.${token}`;
  const slow = `echo $$ > "\${0%/*}/slow.pid"; ( sleep 60.${token} ) & sleep 61.${token}; echo '554 5.7.1 too late' >&2; exit 1`;
  const leftovers: number[] = [];
  try {
    await withCases({ slow }, { FilterTimeout: '1' }, async (r, sc) => {
      const c = await r.session();
      assert.equal(await c.command('MAIL FROM:<slow@example.org>'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
      c.send('Subject: slow\r\n\r\nRSET\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n');
      const t0 = Date.now();
      c.send('.\r\n');
      const reply = await c.reply(5000);
      const elapsed = Date.now() - t0;
      assert.equal(reply, LOCAL_ERROR);
      assert.ok(elapsed >= 900 && elapsed < 2000, `the 451 came ${elapsed} ms after the end of data (FilterTimeout 1 s)`);

      const pid = Number(sc.read('slow.pid'));
      assert.ok(pid > 0, 'the filter recorded its pid');
      const seen = await pgrep(marker);
      leftovers.push(...seen);
      // SIGTERM at the deadline, SIGKILL shortly after: give the kernel a bounded moment.
      await waitFor(() => groupMembers(pid).size === 0, `the filter's process group ${pid} to be empty`, 2000).catch((e: unknown) => {
        leftovers.push(...groupMembers(pid).keys());
        throw e;
      });
      const survivors = await pgrep(marker);
      leftovers.push(...survivors);
      assert.deepEqual(survivors, [], 'no sleep of the filter survives');

      assert.ok(!r.up.commands.some((l) => /smuggled|victim/.test(l)), `body lines taken for commands: ${JSON.stringify(r.up.commands)}`);
      await assertRsetAndSessionGoesOn(r, c);
    });
  } finally {
    // Whatever the outcome, nothing this test started is left running.
    for (const pid of new Set([...leftovers, ...(await pgrep(marker))])) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

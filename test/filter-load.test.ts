// Issue 3, "The verdict" under load: verdicts are never crossed between concurrent sessions
// (proxsmtpd's waitpid(-1) race, B11, delivered rejected mail), and a filter that floods
// its stderr costs the daemon bounded memory and still has its last line read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sendMessage, withFilter } from './helpers/filter.js';
import { procStatus, spoolFiles } from './helpers/process.js';

const SESSIONS = 50;

/** Rejects by content; the verdict and the accepted output name the message and its envelope. */
const BY_CONTENT = `
t=$(mktemp) || exit 75
cat > "$t"
id=$(grep -o 'ID-[0-9]*' "$t" | head -n 1)
n=\${id#ID-}
sleep 0.$((n % 4))
if grep -q REJECT-ME "$t"; then
  rm -f "$t"
  echo "554 5.7.1 rejected $id from $SENDER to $RECIPIENTS" >&2
  exit 1
fi
printf 'X-Envelope: %s %s\\n' "$SENDER" "$RECIPIENTS"
cat "$t"
rm -f "$t"
`;

test(`${SESSIONS} parallel sessions, a filter that rejects by content: each client gets its own message's verdict; only the accepted are delivered, each once`, { timeout: 60_000 }, async () => {
  await withFilter(
    {
      // The queue id names the message the upstream got, so a crossed reply shows.
      upstream: { afterData: (m) => `250 2.0.0 Ok: queued as ${/ID-\d+/.exec(m.toString('latin1'))?.[0] ?? 'none'}` },
      config: (sc) => ({ FilterCommand: `/bin/sh ${sc.script('by-content.sh', BY_CONTENT)}`, MaxConnections: '100' }),
    },
    async ({ connect, up, d }) => {
      const one = async (i: number): Promise<[number, string]> => {
        const c = await connect();
        assert.match(await c.reply(), /^220 /);
        assert.match(await c.command('EHLO client.test'), /^250[ -]/);
        const body = `Subject: message ${i}\r\n\r\nID-${i}\r\n${i % 2 === 0 ? 'this one says REJECT-ME\r\n' : 'this one is fine\r\n'}`;
        const r = await sendMessage(c, `c${i}@example.org`, [`r${i}@example.net`], body, 30_000);
        assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
        return [i, r];
      };
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => one(i)));
      const elapsed = Date.now() - started;
      for (const [i, r] of results) {
        const expected =
          i % 2 === 0 ? `554 5.7.1 rejected ID-${i} from c${i}@example.org to r${i}@example.net\r\n` : `250 2.0.0 Ok: queued as ID-${i}\r\n`;
        assert.equal(r, expected, `client ${i}`);
      }
      const delivered = up.messages.map((m) => m.toString('latin1'));
      assert.equal(delivered.length, SESSIONS / 2, 'only the accepted are delivered');
      const ids = delivered.map((m) => Number(/ID-(\d+)/.exec(m)?.[1] ?? -1)).sort((a, b) => a - b);
      assert.deepEqual(ids, Array.from({ length: SESSIONS / 2 }, (_, k) => 2 * k + 1), 'each accepted message exactly once');
      for (const m of delivered) {
        const i = /ID-(\d+)/.exec(m)?.[1];
        assert.ok(m.startsWith(`X-Envelope: c${i}@example.org r${i}@example.net\r\nSubject: message ${i}\r\n`), m);
      }
      assert.deepEqual(spoolFiles(d.spoolDir), []);
      assert.ok(elapsed < 30_000, `${SESSIONS} sessions took ${elapsed} ms`);
    },
  );
});

/** The daemon's peak resident set (VmHWM), in kB. */
const hwm = (pid: number): number => Number(/^(\d+) kB$/.exec(procStatus(pid).get('VmHWM') ?? '')?.[1] ?? NaN);

const GB = 1_000_000_000;
/**
 * Reading any pipe through Node streams allocates a fresh buffer per read, and V8 collects
 * them only once tens of MB of them are outstanding: a bare Node process that reads 1 GB
 * (or 3 GB) from a child's stderr and keeps nothing peaks 35-45 MB higher, and a little
 * more, now and then, on later gigabytes. That slack is the platform's and bounded; what the
 * filter's stderr may not do is cost more with more output. So the peak after one or two
 * gigabytes stays within the slack (a retained copy, or a string per line, would not).
 */
const SLACK_KB = 64 * 1024;

// Each flood ends its last line (head cuts mid-line), so that the verdict is a line of its own.
// The second gigabyte only where the filter's side is fast, to keep the suite short.
for (const [name, flood, rounds] of [
  ['one line, no newline', `head -c ${GB} /dev/zero | tr '\\0' x >&2; echo >&2`, 1],
  ['nothing but newlines', `head -c ${GB} /dev/zero | tr '\\0' '\\n' >&2`, 1],
  ['short text lines', `yes 'a line of stderr noise' | head -c ${GB} >&2; echo >&2`, 2],
] as const) {
  test(`a filter that writes 1 GB to stderr (${name}) ${rounds === 2 ? 'twice' : 'once'}: bounded daemon memory, and its last line is still the verdict`, { timeout: 40_000 }, async () => {
    await withFilter(
      { config: () => ({ FilterCommand: `cat > /dev/null; ${flood}; echo '554 5.7.1 after the flood' >&2; exit 1`, FilterTimeout: '20' }) },
      async ({ session, d, up }) => {
        const pid = d.proc.pid;
        assert.ok(pid !== undefined);
        const c = await session();
        const peaks = [hwm(pid)];
        for (let n = 0; n < rounds; n++) {
          // The filter's own verdict, so it was read to its end within FilterTimeout (20 s;
          // past it the reply is a 451). How fast is the benchmark's business, not a test's:
          // a 10 s bound here failed only when other work loaded the machine.
          assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: flood\r\n\r\nbody\r\n', 25_000), '554 5.7.1 after the flood\r\n');
          peaks.push(hwm(pid));
        }
        const [p0 = 0, ...after] = peaks;
        const grew = after.map((p) => p - p0);
        assert.ok(grew.every((g) => g < SLACK_KB), `VmHWM grew by ${grew.join(', then ')} kB reading ${rounds} GB of stderr`);
        assert.equal(up.messages.length, 0);
        assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      },
    );
  });
}

// Issue 4: TransparentProxy client and full, and loopback mode, across real hosts. The
// suite builds its own network of namespaces (test/helpers/netns.ts; topology and rules
// from spec/netns-transparent.md), runs smtpsiftd in the gateway and recording SMTP servers
// on the hosts, and sends mail from the clients. It needs root and `ip netns`: without them
// it FAILS, never skips (CI runs it as root; .ci/run also checks that it ran).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loopReason } from '../src/upstream/destination.js';
import { startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { ADDR, GW_ADDRESSES, Netns, type Recorder, type SendResult } from './helpers/netns.js';
import { childPids, procStatus } from './helpers/process.js';

const T = { timeout: 120_000 };
const PORT = 10025;
const net = new Netns();
const scratch = tempDir('smtpsift-netns-');
const spool = join(scratch.dir, 'spool');
const filter = join(scratch.dir, 'filter.sh');
const rec = {} as Record<'server' | 'mx2' | 'client' | 'client2', Recorder>;

// The spec's filter: a message with E2E-REJECT-ME is refused with a 554 on stderr; any other
// gets a header that says the filter ran, for whom, and as which user.
const FILTER = `f=$(mktemp "$TMPDIR/e2e.XXXXXX") || exit 75
cat > "$f"
if grep -q E2E-REJECT-ME "$f"; then rm -f "$f"; echo '554 5.7.1 e2e filter rejected this message' >&2; exit 1; fi
printf 'X-E2E-Filter: ran client=%s server=%s uid=%s\\r\\n' "$CLIENT" "$SERVER" "$(id -u)"
cat "$f"
rm -f "$f"
`;

before(async () => {
  // Readable by nobody: the daemon runs as nobody in A and B, its filter too.
  chmodSync(scratch.dir, 0o755);
  mkdirSync(spool, { mode: 0o1777 });
  chmodSync(spool, 0o1777);
  writeFileSync(filter, FILTER, { mode: 0o644 });
  await net.setup();
  rec.server = await net.recorder('server', 'server', '0.0.0.0', 25);
  rec.mx2 = await net.recorder('mx2', 'client2', '0.0.0.0', 25);
  rec.client = await net.recorder('client', 'client', '0.0.0.0', 10026);
  rec.client2 = await net.recorder('client2', 'client2', '0.0.0.0', 10026);
  // Sanity: a direct client -> server send arrives from the client, with no proxy header.
  const r = await net.send('client', ADDR.server, 25, message('setup-direct'));
  assert.match(r.final ?? JSON.stringify(r), /^250 /, 'setup: direct send to the server');
  const got = rec.server.messages('setup-direct');
  assert.equal(got.length, 1, 'setup: the direct message arrived once');
  assert.equal(got[0]?.peer, ADDR.client, 'setup: the server saw the client');
  assert.doesNotMatch(got[0]?.data ?? '', /X-E2E-Proxy/);
}, { timeout: 60_000 });

after(async () => {
  await net.teardown();
  scratch.remove();
});

let seq = 0;
function token(kind: string): string {
  return `${kind}-${process.pid}-${++seq}`;
}

function message(tok: string, reject = false): { helo: string; from: string; to: string[]; body: string } {
  const body = `Subject: ${tok}\r\nMessage-Id: <${tok}@e2e.test>\r\n\r\n${tok} body\r\n${reject ? 'E2E-REJECT-ME\r\n' : ''}`;
  return { helo: 'client.e2e.test', from: 'sender@e2e.test', to: ['rcpt@e2e.test'], body };
}

/** The header block of recorded DATA. */
function headers(data: string): string {
  const end = data.indexOf('\r\n\r\n');
  return end < 0 ? data : data.slice(0, end + 2);
}

/** Where a message went: each recorder's copies. Exactly once, by `where`, and nowhere else. */
function recordedOnlyBy(tok: string, where: Recorder): { peer?: string; data?: string } {
  const seen = Object.values(rec).map((r) => [r.name, r.messages(tok).length] as const).filter(([, n]) => n > 0);
  assert.deepEqual(seen, [[where.name, 1]], `${tok} should be recorded once by ${where.name}; was by ${JSON.stringify(seen)}`);
  return where.messages(tok)[0] ?? {};
}

function recordedNowhere(tok: string): void {
  for (const r of Object.values(rec)) assert.equal(r.messages(tok).length, 0, `${tok} must not reach ${r.name}`);
}

function accepted(r: SendResult): void {
  assert.equal(r.greeting, '220 smtp.passthru\r\n', JSON.stringify(r));
  assert.match(r.final ?? '', /^250 2\.0\.0 Ok: recorded/, JSON.stringify(r));
}

function rejectedByFilter(r: SendResult): void {
  assert.match(r.final ?? '', /^554 5\.7\.1 e2e filter rejected this message\r\n$/, JSON.stringify(r));
}

async function gwDaemon(caseName: string, options: Record<string, string>): Promise<Daemon> {
  return startDaemon(
    {
      Listen: `0.0.0.0:${PORT}`,
      TempDirectory: spool,
      FilterType: 'pipe',
      FilterCommand: `/bin/sh ${filter}`,
      TimeOut: '10',
      FilterTimeout: '10',
      Header: `X-E2E-Proxy: case=${caseName} client=%i local=%l`,
      ...options,
    },
    ['-d', '4'],
    { wrap: net.wrap('gw') },
  );
}

/** Runs `fn` with the daemon; checks it is still alive at the end and stops it. */
async function withDaemon(d: Daemon, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
    assert.equal(d.proc.exitCode, null, `the daemon is still alive; log:\n${d.log()}`);
    assert.equal(d.proc.signalCode, null);
  } catch (e) {
    (e as Error).message += `\n--- daemon log ---\n${d.log()}`;
    throw e;
  } finally {
    await d.stop();
  }
}

/** Commands in gw, undone in `finally` whatever happens. */
async function withRules(setup: string[][], undo: string[][], fn: () => Promise<void>): Promise<void> {
  try {
    for (const argv of setup) await net.exec('gw', argv);
    await fn();
  } finally {
    for (const argv of undo) await net.exec('gw', argv).catch(() => undefined);
  }
}

const REDIRECT = [['iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', 'to-client', '-p', 'tcp', '--dport', '25', '-j', 'REDIRECT', '--to-ports', String(PORT)]];
const UNREDIRECT = [['iptables', '-t', 'nat', '-F', 'PREROUTING']];

test('netns: TransparentProxy client (REDIRECT), as nobody: the original destination per connection, Header and filter, reject reaches the client, OutAddress ignored', T, async () => {
  await withRules(REDIRECT, UNREDIRECT, async () => {
    // A decoy OutAddress: the documented behaviour ignores it (proxsmtpd 1.10 sent mail there).
    const d = await gwDaemon('A', { TransparentProxy: 'client', OutAddress: `${ADDR.client2}:10026`, User: 'nobody' });
    await withDaemon(d, async () => {
      await d.waitForLog(/the OutAddress option will be ignored when TransparentProxy is enabled/);
      const status = procStatus(d.proc.pid ?? 0);
      assert.equal(status.get('Uid'), '65534\t65534\t65534\t65534');
      assert.equal(status.get('CapEff'), '0000000000000000', 'client mode keeps no capability');

      // 1. To the server's address: arrives once, from a gateway address, Header and filter run.
      const ok = token('A-ok');
      accepted(await net.send('client', ADDR.server, 25, message(ok)));
      const got = recordedOnlyBy(ok, rec.server);
      assert.ok(GW_ADDRESSES.includes(got.peer ?? ''), `the server saw a gateway address, not ${got.peer}`);
      const h = headers(got.data ?? '');
      assert.match(h, new RegExp(`^X-E2E-Proxy: case=A client=${ADDR.client} local=${ADDR.gwClient}\\r$`, 'm'));
      assert.match(h, new RegExp(`^X-E2E-Filter: ran client=${ADDR.client} server=${ADDR.server} uid=65534\\r$`, 'm'));

      // 2. A filter reject reaches the client; nothing is relayed.
      const bad = token('A-reject');
      rejectedByFilter(await net.send('client', ADDR.server, 25, message(bad, true)));
      recordedNowhere(bad);

      // 3. Another destination: followed per connection (mx2, not the server).
      const mx = token('A-mx2');
      accepted(await net.send('client', ADDR.client2, 25, message(mx)));
      const got2 = recordedOnlyBy(mx, rec.mx2);
      assert.ok(GW_ADDRESSES.includes(got2.peer ?? ''), `mx2 saw a gateway address, not ${got2.peer}`);
      assert.match(headers(got2.data ?? ''), new RegExp(`^X-E2E-Filter: ran client=${ADDR.client} server=${ADDR.client2} `, 'm'));
      assert.match(d.log(), new RegExp(`transparent \\(client\\): original destination ${ADDR.client2.replace(/\./g, '\\.')}:25`));
    });
  });
});

/** TPROXY rules in gw sending port 25 to the proxy (spec §B), and their undoing. */
function tproxyRules(): { setup: string[][]; undo: string[][] } {
  const table = join(scratch.dir, 'tproxy.nft');
  // spec §B, in native nft. No conntrack rule: the original destination is the accepted
  // socket's local address, so full mode does not depend on conntrack (unlike proxsmtpd).
  writeFileSync(
    table,
    `table ip sift {
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 0x1 accept
    iifname "to-client" meta l4proto tcp tcp dport 25 tproxy to :${PORT} meta mark set 0x1 accept
  }
}
`,
  );
  const setup = [
    ['ip', 'rule', 'add', 'fwmark', '0x1/0x1', 'lookup', '100'],
    ['ip', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100'],
    ['nft', '-f', table],
  ];
  const undo = [
    ['nft', 'delete', 'table', 'ip', 'sift'],
    ['ip', 'route', 'flush', 'table', '100'],
    ['ip', 'rule', 'del', 'fwmark', '0x1/0x1', 'lookup', '100'],
  ];
  return { setup, undo };
}

test('netns: TransparentProxy full (TPROXY), as nobody with CAP_NET_ADMIN only: the server sees the client itself', T, async () => {
  const { setup, undo } = tproxyRules();
  await withRules(setup, undo, async () => {
    const d = await gwDaemon('B', { TransparentProxy: 'full', OutAddress: `${ADDR.client2}:10026`, User: 'nobody' });
    await withDaemon(d, async () => {
      await d.waitForLog(/the OutAddress option will be ignored/);
      await d.waitForLog(/kept CAP_NET_ADMIN for IP_TRANSPARENT/);
      const status = procStatus(d.proc.pid ?? 0);
      assert.equal(status.get('Uid'), '65534\t65534\t65534\t65534');
      assert.equal(status.get('CapEff'), '0000000000001000', 'only CAP_NET_ADMIN is effective');
      assert.equal(status.get('CapPrm'), '0000000000001000', 'only CAP_NET_ADMIN is permitted');
      assert.equal(status.get('CapInh'), '0000000000000000');

      const ok = token('B-ok');
      accepted(await net.send('client', ADDR.server, 25, message(ok)));
      const got = recordedOnlyBy(ok, rec.server);
      assert.equal(got.peer, ADDR.client, 'the server saw the client\'s own address');
      const h = headers(got.data ?? '');
      assert.match(h, new RegExp(`^X-E2E-Proxy: case=B client=${ADDR.client} local=${ADDR.server}\\r$`, 'm'));
      // The filter runs as nobody: IP_TRANSPARENT's capability is not inherited by it.
      assert.match(h, new RegExp(`^X-E2E-Filter: ran client=${ADDR.client} server=${ADDR.server} uid=65534\\r$`, 'm'));

      const bad = token('B-reject');
      rejectedByFilter(await net.send('client', ADDR.server, 25, message(bad, true)));
      recordedNowhere(bad);

      const mx = token('B-mx2');
      accepted(await net.send('client', ADDR.client2, 25, message(mx)));
      assert.equal(recordedOnlyBy(mx, rec.mx2).peer, ADDR.client, 'mx2 saw the client too');
    });
  });
});

test('netns: TransparentProxy full with Workers: 2: no process has more than CAP_NET_ADMIN and the worker process has it; connections served by either process reach the server from the client itself', T, async () => {
  const { setup, undo } = tproxyRules();
  await withRules(setup, undo, async () => {
    const d = await gwDaemon('W', { TransparentProxy: 'full', OutAddress: `${ADDR.client2}:10026`, User: 'nobody', Workers: '2' });
    await withDaemon(d, async () => {
      await d.waitForLog(/Workers: 2 \(the main process and 1 worker process\)/);
      const pid = d.proc.pid ?? 0;
      const workers = childPids(pid);
      assert.equal(workers.length, 1, 'one worker process');
      // Capabilities are per thread: each process's main thread (the one that makes the
      // sockets) has CAP_NET_ADMIN after the switch; threads from before it have none.
      for (const p of [pid, ...workers]) {
        for (const tid of readdirSync(`/proc/${p}/task`)) {
          const status = procStatus(p, tid);
          assert.equal(status.get('Uid'), '65534\t65534\t65534\t65534', `process ${p} thread ${tid}`);
          assert.match(status.get('CapPrm') ?? '', /^00000000000010{3}$|^0{16}$/, `process ${p} thread ${tid}: nothing but CAP_NET_ADMIN`);
          assert.equal(status.get('CapEff'), status.get('CapPrm'), `process ${p} thread ${tid}`);
          assert.equal(status.get('CapInh'), '0000000000000000');
          assert.equal(status.get('CapAmb'), '0000000000000000');
        }
        assert.equal(procStatus(p, String(p)).get('CapEff'), '0000000000001000', `process ${p}'s main thread has CAP_NET_ADMIN`);
      }
      const servedBy = new Set<string>();
      for (let i = 0; i < 20 && servedBy.size < 2; i++) {
        const ok = token(`W-ok${i}`);
        accepted(await net.send('client', ADDR.server, 25, message(ok)));
        assert.equal(recordedOnlyBy(ok, rec.server).peer, ADDR.client, 'the server saw the client\'s own address');
        for (const m of d.log().matchAll(/^smtpsiftd: (worker \d+: )?[0-9A-F]+: accepted connection/gm)) servedBy.add(m[1] ?? 'main');
      }
      assert.equal(servedBy.size, 2, 'both processes served');
    });
  });
});

test('netns: loopback (OutAddress: 10026): two hosts at once through one proxy, each message back only to its sender', T, async () => {
  const d = await gwDaemon('C', { OutAddress: '10026' });
  await withDaemon(d, async () => {
    const one = token('C-client');
    const two = token('C-client2');
    // Both to the same daemon address; client2 reaches it through gw's to-client2.
    const [r1, r2] = await Promise.all([
      net.send('client', ADDR.gwClient, PORT, message(one)),
      net.send('client2', ADDR.gwClient, PORT, message(two)),
    ]);
    accepted(r1);
    accepted(r2);
    const got1 = recordedOnlyBy(one, rec.client);
    const got2 = recordedOnlyBy(two, rec.client2);
    assert.equal(got1.peer, ADDR.gwClient);
    assert.equal(got2.peer, ADDR.gwClient2);
    assert.match(headers(got1.data ?? ''), new RegExp(`^X-E2E-Proxy: case=C client=${ADDR.client} local=${ADDR.gwClient}\\r$`, 'm'));
    assert.match(headers(got2.data ?? ''), new RegExp(`^X-E2E-Proxy: case=C client=${ADDR.client2} local=${ADDR.gwClient}\\r$`, 'm'));
    assert.match(headers(got1.data ?? ''), new RegExp(`^X-E2E-Filter: ran client=${ADDR.client} server=${ADDR.client} uid=0\\r$`, 'm'));
    assert.match(headers(got2.data ?? ''), new RegExp(`^X-E2E-Filter: ran client=${ADDR.client2} server=${ADDR.client2} uid=0\\r$`, 'm'));

    const bad = token('C-reject');
    rejectedByFilter(await net.send('client2', ADDR.gwClient, PORT, message(bad, true)));
    recordedNowhere(bad);
  });
});

test('netns: control, a plain OutAddress: the server sees the gateway, %i the client, %l the gateway', T, async () => {
  const d = await gwDaemon('D', { OutAddress: `${ADDR.server}:25` });
  await withDaemon(d, async () => {
    const ok = token('D-ok');
    accepted(await net.send('client', ADDR.gwClient, PORT, message(ok)));
    const got = recordedOnlyBy(ok, rec.server);
    assert.equal(got.peer, ADDR.gwServer);
    assert.match(headers(got.data ?? ''), new RegExp(`^X-E2E-Proxy: case=D client=${ADDR.client} local=${ADDR.gwClient}\\r$`, 'm'));
    const bad = token('D-reject');
    rejectedByFilter(await net.send('client', ADDR.gwClient, PORT, message(bad, true)));
    recordedNowhere(bad);
  });
});

test('netns: loop guard: a connection straight to the proxy is refused with 421 4.4.1 and a log line, nothing dialled (client and full mode)', T, async () => {
  await withRules(REDIRECT, UNREDIRECT, async () => {
    for (const mode of ['client', 'full'] as const) {
      const d = await gwDaemon('E', { TransparentProxy: mode });
      await withDaemon(d, async () => {
        const before = Object.values(rec).map((r) => r.events.length);
        const r = await net.send('client', ADDR.gwClient, PORT, message(token(`E-${mode}`)));
        assert.match(r.final ?? '', /^421 4\.4\.1 /, `${mode}: ${JSON.stringify(r)}`);
        await d.waitForLog(new RegExp(`refusing to relay to ${ADDR.gwClient.replace(/\./g, '\\.')}:${PORT}: it is this proxy's own listener`));
        assert.deepEqual(Object.values(rec).map((x) => x.events.length), before, 'no recorder saw a connection');
      });
    }
  });
});

test('netns: client mode where the kernel has no original destination (no NAT in that namespace): 421 4.4.1, logged, daemon lives on', T, async () => {
  const d = await startDaemon(
    { Listen: `0.0.0.0:${PORT}`, TempDirectory: spool, TransparentProxy: 'client', TimeOut: '10' },
    ['-d', '4'],
    { wrap: net.wrap('server') },
  );
  await withDaemon(d, async () => {
    const r = await net.send('server', ADDR.server, PORT, message(token('F')));
    assert.match(r.final ?? '', /^421 4\.4\.1 /, JSON.stringify(r));
    // No conntrack entry (ENOENT), or, if the kernel tracks anyway, the listener itself.
    await d.waitForLog(/cannot get the original destination for transparent proxying: getsockopt SO_ORIGINAL_DST|refusing to relay/);
  });
});

test('loop guard rules: the client itself, our own listener (exact or wildcard), not a mere port match elsewhere', () => {
  const listener = { address: '0.0.0.0', port: PORT };
  const local = (): string[] => ['127.0.0.1', '10.200.1.1'];
  assert.match(loopReason({ address: '10.200.1.2', port: 25 }, '10.200.1.2', listener, local) ?? '', /client's own address/);
  assert.match(loopReason({ address: '::ffff:10.200.1.2', port: 25 }, '10.200.1.2', listener, local) ?? '', /client's own address/);
  assert.match(loopReason({ address: '10.200.1.1', port: PORT }, '10.200.1.2', listener, local) ?? '', /own listener/);
  assert.match(loopReason({ address: '192.0.2.1', port: PORT }, '10.200.1.2', { address: '192.0.2.1', port: PORT }, local) ?? '', /own listener/);
  assert.equal(loopReason({ address: '192.0.2.9', port: PORT }, '10.200.1.2', listener, local), undefined);
  assert.equal(loopReason({ address: '10.200.1.1', port: 25 }, '10.200.1.2', listener, local), undefined);
});

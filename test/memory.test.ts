// Memory of a large message (issue 7: a 50 MB message under 100 MB of daemon memory), with
// the benchmark's peers: Postfix's smtp-source in front, smtp-sink behind. Every read of the
// client's socket is a new buffer that is garbage once spooled, and V8 collects such
// buffers late on its own; the daemon collects as it goes (src/net/garbage.ts). Measured
// here: the daemon's peak resident memory over what it had just before the message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { startDaemon } from './helpers/daemon.js';
import { alive, freePort, procStatus, run } from './helpers/process.js';

const SOURCE = '/usr/sbin/smtp-source';
const SINK = '/usr/sbin/smtp-sink';
const MB = 1024 * 1024;

/** A process's resident memory now and at its peak since the last reset (VmRSS, VmHWM), in kB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = procStatus(pid);
  const kb = (field: string): number => Number(/^(\d+) kB$/.exec(status.get(field) ?? '')?.[1] ?? NaN);
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** smtp-source: `count` messages of `bytes` on one connection each; throws unless all were accepted. */
async function source(port: number, count: number, bytes: number): Promise<void> {
  const r = await run(SOURCE, ['-m', String(count), '-l', String(bytes), `127.0.0.1:${port}`], 60_000);
  assert.equal(r.status, 0, `smtp-source: ${r.stderr}`);
}

test('a 50 MB message from smtp-source: the daemon\'s peak resident memory stays within 16 MB of where it was', { timeout: 90_000 }, async () => {
  const sinkPort = await freePort();
  // smtp-sink refuses to run as root without -u.
  const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const sink = spawn(SINK, [...user, `127.0.0.1:${sinkPort}`, '100'], { stdio: 'ignore' });
  try {
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      up = (await run(SOURCE, ['-m', '1', `127.0.0.1:${sinkPort}`])).status === 0;
      if (!up) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(up, 'smtp-sink listens');
    const d = await startDaemon({ OutAddress: `127.0.0.1:${sinkPort}` });
    try {
      const pid = d.proc.pid ?? 0;
      // Warmed up as the benchmark's fresh daemon is: the code a message runs is compiled.
      await source(d.port, 5, 4096);
      // The peak restarts from the resident memory now.
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
      const before = memory(pid).rss;
      await source(d.port, 1, 50 * MB);
      const grew = memory(pid).peak - before;
      // Without the collections: 26-34 MB here; with them, 9-10 MB.
      assert.ok(grew < 16 * 1024, `peak ${grew} kB above the resident memory before the message`);
      assert.ok(alive(pid));
    } finally {
      await d.stop();
    }
  } finally {
    sink.kill();
  }
});

// A minimal SMTP sink in Node, the upstream of the idle-connections scenario only.
// smtp-sink holds 10,000 connections, but opening them gets slower with every one held
// (1,000 in 0.8 s, 6,000 in 7.4 s, 10,000 in 26 s here, worse with a longer -t: its timer
// list): the figure would be smtp-sink's, and the run would not fit a quick mode. This one
// greets, answers EHLO/HELO/MAIL/RCPT/RSET/NOOP with 250, DATA with 354 and the end of data
// with 250, QUIT with 221, and has no timers at all. Run as `node node-sink.js PORT`.

import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startNode, stop, waitForGreeting, type Started } from './processes.js';

const SCRIPT = fileURLToPath(import.meta.url);

function serve(s: Socket): void {
  s.on('error', () => undefined);
  s.setNoDelay(true);
  let inData = false;
  let buf = '';
  let tail = '';
  s.write('220 node-sink ESMTP\r\n');
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (;;) {
      if (inData) {
        // The end of data is CRLF . CRLF; `tail` holds what came before `buf` (at first the
        // CRLF of the DATA line), enough to find a terminator split across reads.
        const all = tail + buf;
        const end = all.indexOf('\r\n.\r\n');
        if (end < 0) {
          tail = all.slice(-4);
          buf = '';
          return;
        }
        buf = all.slice(end + 5);
        inData = false;
        s.write('250 2.0.0 Ok: queued\r\n');
        continue;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const verb = buf.slice(0, nl).trim().split(/\s/, 1)[0]?.toUpperCase() ?? '';
      buf = buf.slice(nl + 1);
      if (verb === 'EHLO') s.write('250-node-sink\r\n250 8BITMIME\r\n');
      else if (verb === 'DATA') {
        inData = true;
        tail = '\r\n';
        s.write('354 End data with <CR><LF>.<CR><LF>\r\n');
      } else if (verb === 'QUIT') {
        s.end('221 2.0.0 Bye\r\n');
        return;
      } else s.write('250 2.0.0 Ok\r\n');
    }
  });
}

/** The parent's handle: a node-sink process on a free port of 127.0.0.1. */
export class NodeSink {
  private constructor(
    readonly port: number,
    readonly proc: Started,
  ) {}

  static async start(dir: string, name = 'node-sink'): Promise<NodeSink> {
    const port = await freePort();
    const proc = startNode(name, SCRIPT, [String(port)], join(dir, `${name}.log`));
    await waitForGreeting(port, proc);
    return new NodeSink(port, proc);
  }

  readonly args: readonly string[] = ['(bench/lib/node-sink.ts)'];

  stop(): Promise<void> {
    return stop(this.proc);
  }
}

if (process.argv[1] === SCRIPT) {
  const port = Number(process.argv[2]);
  // A backlog as deep as the kernel allows: the proxy opens its upstream connections in bursts.
  createServer({ noDelay: true }, serve).listen({ port, host: '127.0.0.1', backlog: 4096 });
  // Started with an IPC channel: the benchmark going away ends the sink.
  process.on('disconnect', () => process.exit(0));
}

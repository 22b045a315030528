// A program the transparent-proxy suite runs inside its network namespaces with
// `ip netns exec NS node netns-agent.js ...` (test/transparent.test.ts):
//
//   recorder HOST PORT     an SMTP server (RecordingUpstream) that prints one JSON line per
//                          connection ({event:'connect', peer}) and per message ({event:
//                          'message', peer, helo, from, rcpts, data}); runs until killed
//   send HOST PORT JSON    one SMTP session ({helo, from, to, body}); prints the replies as
//                          one JSON line ({greeting, replies, final} or {error})

import { RawClient } from './client.js';
import { RecordingUpstream, type UpstreamSession } from './upstream.js';

function print(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function recorder(host: string, port: number): Promise<void> {
  const peerOf = (s: UpstreamSession): string => (s.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
  const up = await RecordingUpstream.start({
    host,
    port,
    greeting: (s) => {
      print({ event: 'connect', peer: peerOf(s) });
      return `220 ${host} ESMTP netns recorder`;
    },
    afterData: (message, s) => {
      const cmds = s.commands.map((c) => c.trimEnd());
      print({
        event: 'message',
        peer: peerOf(s),
        helo: cmds.filter((c) => /^(EHLO|HELO) /i.test(c)).map((c) => c.slice(5).trim()).pop() ?? '',
        from: cmds.filter((c) => /^MAIL FROM:/i.test(c)).pop() ?? '',
        rcpts: cmds.filter((c) => /^RCPT TO:/i.test(c)),
        data: message.toString('latin1'),
      });
      return '250 2.0.0 Ok: recorded';
    },
  });
  print({ event: 'ready', port: up.port });
  const stop = (): void => void up.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

interface Send {
  readonly helo: string;
  readonly from: string;
  readonly to: readonly string[];
  readonly body: string;
}

async function send(host: string, port: number, m: Send): Promise<void> {
  const replies: string[] = [];
  let c: RawClient | undefined;
  try {
    c = await RawClient.connect(port, host);
    const greeting = await c.reply(15_000);
    if (!greeting.startsWith('220')) return print({ greeting, replies, final: greeting });
    for (const line of [`EHLO ${m.helo}`, `MAIL FROM:<${m.from}>`, ...m.to.map((t) => `RCPT TO:<${t}>`), 'DATA']) {
      const r = await c.command(line, 15_000);
      replies.push(r);
      if (!/^[23]/.test(r)) return print({ greeting, replies, final: r });
    }
    c.send(`${m.body}.\r\n`);
    const final = await c.reply(15_000);
    replies.push(await c.command('QUIT', 5000).catch((e: Error) => e.message));
    print({ greeting, replies, final });
  } catch (e) {
    print({ error: (e as Error).message, replies });
  } finally {
    c?.close();
  }
}

const [cmd, host = '', port = '0', json = '{}'] = process.argv.slice(2);
if (cmd === 'recorder') await recorder(host, Number(port));
else if (cmd === 'send') await send(host, Number(port), JSON.parse(json) as Send);
else {
  process.stderr.write('usage: netns-agent.js recorder HOST PORT | send HOST PORT JSON\n');
  process.exit(2);
}

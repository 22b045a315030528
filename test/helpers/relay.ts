// A relay under test: a RecordingUpstream, the real smtpsiftd in front of it, and the raw
// clients a test opens, all cleaned up in one place (test/relay-*.test.ts).

import { startDaemon, type Daemon } from './daemon.js';
import { RawClient } from './client.js';
import { RecordingUpstream, type UpstreamOptions } from './upstream.js';

export interface Relay {
  readonly up: RecordingUpstream;
  readonly d: Daemon;
  /** A raw client, closed at the end of the test. */
  connect(): Promise<RawClient>;
  /** Connected, greeted (220 checked) and, unless `helo` is null, past EHLO. */
  session(helo?: string | null): Promise<RawClient>;
}

/**
 * Runs `fn` with a fresh upstream and daemon. `config` lines (or a function of the started
 * upstream giving them) are added to the daemon's; OutAddress points at the upstream unless given.
 */
export async function withRelay(
  opts: { upstream?: UpstreamOptions; config?: Record<string, string> | ((up: RecordingUpstream) => Record<string, string>) },
  fn: (r: Relay) => Promise<void>,
): Promise<void> {
  const up = await RecordingUpstream.start(opts.upstream);
  const clients: RawClient[] = [];
  let d: Daemon | undefined;
  try {
    const config = typeof opts.config === 'function' ? opts.config(up) : opts.config;
    d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, ...config });
    const daemon = d;
    const connect = async (): Promise<RawClient> => {
      const c = daemon.socketPath !== undefined ? await RawClient.connectPath(daemon.socketPath) : await RawClient.connect(daemon.port);
      clients.push(c);
      return c;
    };
    await fn({
      up,
      d: daemon,
      connect,
      async session(helo = 'EHLO client.test') {
        const c = await connect();
        return c.greet(helo);
      },
    });
  } finally {
    for (const c of clients) c.close();
    await d?.stop();
    await up.close();
  }
}

/**
 * Undoes the dot-stuffing of DATA bytes as an upstream receives them (CRLF lines, no
 * terminator): a dot that starts a line is removed.
 */
export function unstuff(wire: Buffer): Buffer {
  const out: Buffer[] = [];
  let start = 0;
  while (start < wire.length) {
    const crlf = wire.indexOf('\r\n', start);
    const end = crlf < 0 ? wire.length : crlf + 2;
    out.push(wire.subarray(wire[start] === 0x2e ? start + 1 : start, end));
    start = end;
  }
  return Buffer.concat(out);
}

/** Splits a multi-line reply into its lines, without line endings. */
export function lines(reply: string): string[] {
  return reply.split('\r\n').slice(0, -1);
}

/** The verbs (upper case) of the commands an upstream session received. */
export function verbs(commands: readonly string[]): string[] {
  return commands.map((c) => (c.trim().split(/\s+/)[0] ?? '').toUpperCase());
}

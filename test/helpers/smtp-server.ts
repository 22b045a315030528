// smtp-server as a real upstream MTA: every message it receives is handed to `onMessage`
// as a stream, already un-stuffed by smtp-server, with the envelope it accepted.

import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

export interface Received {
  readonly from: string;
  readonly to: readonly string[];
}

export interface RealUpstream {
  readonly server: SMTPServer;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * `onMessage` consumes the stream and resolves the queue id for the 250 reply (or throws
 * to refuse the message).
 */
export async function startSmtpServer(
  onMessage: (stream: Readable, envelope: Received) => Promise<string>,
  options: { path?: string } = {},
): Promise<RealUpstream> {
  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    banner: 'real upstream',
    closeTimeout: 2000,
    onData(stream, session: SMTPServerSession, callback) {
      const envelope: Received = {
        from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
        to: session.envelope.rcptTo.map((r) => r.address),
      };
      onMessage(stream, envelope).then(
        (id) => callback(null, `Ok: queued as ${id}`),
        (e: unknown) => {
          stream.resume();
          callback(e instanceof Error ? e : new Error(String(e)));
        },
      );
    },
  });
  server.on('error', () => undefined);
  if (options.path !== undefined) server.listen(options.path);
  else server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  const a = server.server.address();
  return {
    server,
    port: typeof a === 'object' && a !== null ? a.port : 0,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

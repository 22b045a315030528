// A unix datagram socket that collects what a daemon sends to syslog (SyslogSocket).

import { createRequire } from 'node:module';

interface DgramSocket {
  bind(path: string): void;
  on(event: 'error', cb: (e: Error) => void): void;
  close(): void;
}

export function syslogCollector(path: string): { lines: string[]; close: () => void } {
  const { createSocket } = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram', cb: (msg: Buffer) => void): DgramSocket };
  const lines: string[] = [];
  const socket = createSocket('unix_dgram', (msg) => lines.push(msg.toString('latin1')));
  socket.on('error', () => undefined);
  socket.bind(path);
  return { lines, close: () => socket.close() };
}

// The `relay` target: a TCP relay in a few lines of Node.js, with no SMTP in it. Each
// connection is piped to the upstream both ways, with TCP_NODELAY as smtpsiftd's sockets
// have: the floor of any proxy written in Node on this machine, so that what smtpsiftd
// costs beyond it shows as its own. Usage: node relay.js LISTEN_PORT UPSTREAM_PORT
// (both on 127.0.0.1).

import { connect, createServer, type Socket } from 'node:net';

const listenPort = Number(process.argv[2]);
const upstreamPort = Number(process.argv[3]);

function relay(client: Socket): void {
  const upstream = connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  for (const s of [client, upstream]) s.on('error', close).on('close', close);
  client.pipe(upstream).pipe(client);
}

createServer({ noDelay: true }, relay).listen(listenPort, '127.0.0.1');

// A worker thread of Workers: N (src/server/workers.ts): a Listener of its own on its own
// descriptor of the daemon's listening socket, with the services a session needs made in
// this thread: the same Config (parsed again from the same text), its own route table
// (reloaded on the main thread's word), its own accounting sinks (the log file opened for
// appending, so whole lines from every thread; the counters database opened per thread,
// as lmdb supports), and a spool view whose file names carry the thread's number. Its log
// lines go to the main thread's logger, prefixed `worker N: `.

import { parentPort, workerData } from 'node:worker_threads';
import { accountingFor } from '../accounting/accounting.js';
import { parseConfig } from '../config/load.js';
import { Logger, type Level, type Sink } from '../log/logger.js';
import { Router } from '../routing/router.js';
import { Spool } from '../spool/spool.js';
import { destinationFor } from '../upstream/destination.js';
import { Listener } from './listener.js';
import { connectionSlots } from './slots.js';
import type { FromWorker, ToWorker, WorkerInit } from './workers.js';

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('src/server/worker.js runs as a worker thread of smtpsiftd');
  const init = workerData as WorkerInit;
  const send = (m: FromWorker): void => port.postMessage(m);
  const sink: Sink = { write: (level: Level, text: string) => send({ t: 'log', level, text }) };
  const log = new Logger(sink, init.level, `worker ${init.index}: `);
  const config = parseConfig(init.configText, init.configFile);
  const router = config.routeType !== undefined ? new Router(config, log) : undefined;
  const spool = Spool.shared(init.spoolDir, init.index, log);
  const accounting = accountingFor(config, log);
  const listener: Listener = new Listener(
    {
      config,
      log,
      spool,
      router,
      accounting,
      destination: destinationFor(config, router !== undefined, () => listener.tcpAddress()),
    },
    log,
    connectionSlots(config.maxConnections, init.slots),
  );
  await listener.adopt(init.fd);
  router?.watch();

  let stopping = false;
  port.on('message', (m: ToWorker) => {
    if (m.t === 'reload') {
      accounting?.reopen();
      router?.reload('SIGHUP');
    } else if (m.t === 'reopen') accounting?.reopen();
    else if (m.t === 'stop' && !stopping) {
      stopping = true;
      void (async () => {
        await listener.close(m.deadlineMs);
        await accounting?.close();
        await router?.close();
        // In a worker thread this ends the thread, not the process.
        process.exit(0);
      })();
    }
  });
  send({ t: 'ready' });
}

await main();

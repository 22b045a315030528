// A worker process of Workers: N (src/server/workers.ts): a Listener of its own on the
// daemon's listening socket (descriptor 4), counting connections in the main process's
// shared counters (descriptor 5), with the services a session needs made here: the same
// Config (parsed again from the same text), its own route table (reloaded on the main
// process's word), its own accounting sinks (the log file opened for appending, so whole
// lines from every process; the counters database opened per process, as lmdb supports),
// and a spool view whose file names carry the worker's number. Its log lines go to the main
// process's logger, prefixed `worker N: `.

import { accountingFor } from '../accounting/accounting.js';
import { parseConfig } from '../config/load.js';
import { Logger, type Level, type Sink } from '../log/logger.js';
import { Router } from '../routing/router.js';
import { Spool } from '../spool/spool.js';
import { destinationFor } from '../upstream/destination.js';
import { DRAIN_SECONDS } from './daemon.js';
import { Listener } from './listener.js';
import { dropTo } from './privileges.js';
import { attachConnectionSlots } from './slots.js';
import { LISTEN_FD, SLOTS_FD, type FromWorker, type ToWorker, type WorkerInit } from './workers.js';

function send(m: FromWorker, then?: () => void): void {
  if (process.connected && process.send !== undefined) process.send(m, undefined, {}, () => then?.());
  else then?.();
}

/** Exits once `m` is sent (or after a second, whatever happened to the channel). */
function sendAndExit(m: FromWorker, code: number): void {
  setTimeout(() => process.exit(code), 1000).unref();
  send(m, () => process.exit(code));
}

/** The main process's end: before serving nothing to drain; serve() makes it a drain. */
let onDisconnect = (): void => process.exit(0);

async function serve(init: WorkerInit): Promise<void> {
  if (init.account !== undefined) dropTo(init.account, init.keepCaps);
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
    attachConnectionSlots(SLOTS_FD),
    init.perProcess,
  );
  await listener.adopt(LISTEN_FD);
  router?.watch();

  let stopping = false;
  const stop = (deadlineMs: number): void => {
    if (stopping) return;
    stopping = true;
    void (async () => {
      await listener.close(deadlineMs);
      await accounting?.close();
      await router?.close();
      process.exit(0);
    })();
  };
  process.on('message', (m: ToWorker) => {
    if (m.t === 'reload') {
      accounting?.reopen();
      router?.reload('SIGHUP');
    } else if (m.t === 'reopen') accounting?.reopen();
    else if (m.t === 'stop') stop(m.deadlineMs);
  });
  // The main process is gone (killed): no one to take the connections; drain them.
  onDisconnect = () => stop(DRAIN_SECONDS * 1000);
  send({ t: 'ready' });
}

if (process.send === undefined) {
  process.stderr.write('smtpsiftd: src/server/worker.js runs as a worker process of smtpsiftd\n');
  process.exit(2);
}
// The main process handles these signals and passes them on (src/server/workers.ts).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const) process.on(signal, () => undefined);
process.on('uncaughtException', (e) => sendAndExit({ t: 'crash', stack: e.stack ?? String(e) }, 1));
process.on('disconnect', () => onDisconnect());
process.once('message', (m: ToWorker) => {
  if (m.t !== 'init') return;
  serve(m).catch((e: unknown) => sendAndExit({ t: 'error', message: (e as Error).message }, 1));
});

// smtpsift try: a message through the configured filter exactly as the daemon would run it
// (same environment, same verdict code path, same Header), for filter authors.

import { accessSync, constants, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { DEFAULT_CONFIG } from '../config/schema.js';
import { filterMessage } from '../filter/filter.js';
import { expandHeader } from '../filter/header.js';
import { outgoing } from '../filter/outgoing.js';
import { rejection } from '../filter/verdict.js';
import { Logger, stderrSink } from '../log/logger.js';
import { dropTo, lookupUser } from '../server/privileges.js';

/** Exit status per verdict; 2 stays for usage and configuration errors. */
export const TRY_STATUS = { accept: 0, reject: 1, drop: 3, tempfail: 4 } as const;

export async function tryFilter(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      file: { type: 'string', short: 'f' },
      sender: { type: 'string' },
      rcpt: { type: 'string', multiple: true },
      client: { type: 'string' },
      helo: { type: 'string' },
      remote: { type: 'string' },
      server: { type: 'string' },
      debug: { type: 'boolean', short: 'd' },
    },
  });
  // CLIENT and SERVER are socket addresses in the daemon, always IPs (smtpsift(1): --client
  // IP, --server IP); a filter tried with anything else would see what no session gives it.
  // --remote stays free text: REMOTE is XFORWARD's ADDR as the client sent it.
  for (const opt of ['client', 'server'] as const) {
    const v = values[opt];
    if (v !== undefined && isIP(v) === 0) throw new Error(`--${opt}: '${v}' is not an IP address`);
  }
  const config = loadConfig(values.file ?? DEFAULT_CONFIG);
  const log = new Logger(stderrSink('smtpsift'), values.debug ? 4 : 1);
  if (config.filterType === 'reject') {
    // The daemon runs no filter then: MAIL, RCPT and DATA get FilterReject (proxsmtpd §13.6).
    const r = rejection(config.filterReject);
    const action = r.code < 300 ? 'drop' : r.code < 500 ? 'tempfail' : 'reject';
    process.stdout.write(`verdict: ${action}\nreply: ${r.wire.trimEnd()}\n`);
    return TRY_STATUS[action];
  }
  // As the daemon: run as root with a User, the filter runs as that user, never as root.
  if (config.user !== undefined && process.getuid?.() === 0) {
    const account = lookupUser(config.user);
    if (account === undefined) throw new Error(`User: no such user '${config.user}'`);
    dropTo(account);
  }
  const dir = mkdtempSync(join(writable(config.tempDirectory) ? config.tempDirectory : tmpdir(), 'smtpsift-try-'));
  const message = join(dir, 'message');
  await pipeline(process.stdin, createWriteStream(message, { mode: 0o600 }));
  const client = values.client ?? '127.0.0.1';
  const outcome = await filterMessage({
    config,
    log,
    message,
    output: join(dir, 'filtered'),
    facts: {
      sender: bare(values.sender ?? '<>'),
      recipients: (values.rcpt ?? ['postmaster@localhost']).map(bare),
      client,
      server: values.server ?? '127.0.0.1',
      remote: values.remote,
      remoteHelo: values.helo,
    },
  });
  const v = outcome.verdict;
  process.stdout.write(`verdict: ${v.action}\n`);
  if (v.action !== 'accept') {
    process.stdout.write(`reply: ${v.reply.wire.trimEnd()}\n`);
    rmSync(dir, { recursive: true, force: true });
    return TRY_STATUS[v.action];
  }
  // What the upstream would be sent (before dot-stuffing), Header included.
  const result = join(dir, 'outgoing.eml');
  const header =
    config.header === undefined
      ? undefined
      : expandHeader(config.header, { clientIp: client, localIp: '127.0.0.1', date: new Date() }, (m) => log.warn(m));
  await pipeline(outgoing(outcome.send, header), createWriteStream(result, { mode: 0o600 }));
  rmSync(message, { force: true });
  rmSync(outcome.send, { force: true });
  process.stdout.write(`reply: the upstream's own reply to the message\nmessage: ${result}\n`);
  return TRY_STATUS.accept;
}

/** As the daemon records a MAIL or RCPT path: `<a@b>` is `a@b`, the null sender stays `<>`. */
const bare = (a: string): string => (a === '<>' || a === '' ? '<>' : a.replace(/^<(.*)>$/, '$1'));

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

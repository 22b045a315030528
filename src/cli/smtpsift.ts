#!/usr/bin/env node
// smtpsift: the operator's tools. `smtpsift check -f FILE` validates a configuration.

import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { formatConfig, loadConfig } from '../config/load.js';
import { DEFAULT_CONFIG } from '../config/schema.js';
import { resolveSystem, StartupError } from '../server/system.js';
import { relayWarnings, Router } from '../routing/router.js';
import { makedb } from './makedb.js';
import { logalyze } from './logalyze.js';
import { stats } from './stats.js';
import { tryFilter } from './try.js';

const USAGE = `usage: smtpsift check [-f configfile]
       smtpsift makedb [-o database] routefile
       smtpsift try [-f configfile] [--sender A] [--rcpt B]... [--client IP] [--helo NAME]
                    [--remote IP] [--server IP] [-d] < message.eml
       smtpsift stats [-f configfile | --db PATH] [--domain D] [--since DATE] [--until DATE]
                      [--by domain|dest|day] [--json] [--chart] [--reset DOMAIN]
       smtpsift logalyze [--listby from|ip|dest] [--from RE] [--ip RE] [--dest RE]
                         [-f configfile | --format FMT] [--status S] [--json] [--chart] FILE...
  check    validate a configuration; print the effective one (exit 0) or the errors (exit 2)
  makedb   compile a flat route file into the lmdb route database (RouteType lmdb), in one
           transaction, so a running daemon sees the new table at once; -o DB (default FILE.db)
  try      run the configured filter on a message as the daemon would; exit 0 accept,
           1 reject, 3 drop, 4 tempfail (2: usage or configuration error)
  stats    delivered bytes and messages from the counters database, sorted by bytes; dates
           YYYY-MM-DD, UTC, inclusive; --reset DOMAIN forgets a domain; safe while daemons run
  logalyze totals per sender, client IP or destination (default) from log files written with
           the LogFormat (- for stdin, .gz read directly)
`;

function check(args: string[]): number {
  const { values } = parseArgs({ args, options: { file: { type: 'string', short: 'f' } }, strict: true });
  const file = values.file ?? DEFAULT_CONFIG;
  try {
    const config = loadConfig(file);
    // What the daemon would refuse at start-up (User, TempDirectory) is an error here too.
    const warn = (warning: string): void => void process.stderr.write(`smtpsift: warning: ${warning}\n`);
    resolveSystem(config, warn);
    if (config.routeType !== undefined) {
      // The route table is part of what the daemon would refuse: FILE:LINE errors, exit 2.
      void new Router(config, undefined).close();
      for (const w of relayWarnings(config)) warn(w);
    }
    process.stdout.write(formatConfig(config));
    return 0;
  } catch (e) {
    if (e instanceof StartupError) {
      process.stderr.write(`smtpsift: ${e.message}\n`);
      return e.status;
    }
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) process.stderr.write(`smtpsift: ${p}\n`);
    return 2;
  }
}

const COMMANDS: Record<string, (args: string[]) => number | Promise<number>> = { check, makedb, try: tryFilter, stats, logalyze };

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  const command = name === undefined ? undefined : COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(name === undefined || name === '-h' || name === '--help' ? USAGE : `smtpsift: unknown command '${name}'\n${USAGE}`);
    return 2;
  }
  try {
    return await command(args);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) process.stderr.write(`smtpsift: ${p}\n`);
      return 2;
    }
    process.stderr.write(`smtpsift: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));

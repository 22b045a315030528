#!/usr/bin/env node
// smtpsift: the operator's tools. `smtpsift check -f FILE` validates a configuration.

import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { formatConfig, loadConfig } from '../config/load.js';
import { DEFAULT_CONFIG } from '../config/schema.js';
import { resolveSystem, StartupError } from '../server/system.js';
import { tryFilter } from './try.js';

const USAGE = `usage: smtpsift check [-f configfile]
       smtpsift try [-f configfile] [--sender A] [--rcpt B]... [--client IP] [--helo NAME]
                    [--remote IP] [--server IP] [-d] < message.eml
  check    validate a configuration; print the effective one (exit 0) or the errors (exit 2)
  try      run the configured filter on a message as the daemon would; exit 0 accept,
           1 reject, 3 drop, 4 tempfail (2: usage or configuration error)
`;

function check(args: string[]): number {
  const { values } = parseArgs({ args, options: { file: { type: 'string', short: 'f' } }, strict: true });
  const file = values.file ?? DEFAULT_CONFIG;
  try {
    const config = loadConfig(file);
    // What the daemon would refuse at start-up (User, TempDirectory) is an error here too.
    resolveSystem(config, (warning) => process.stderr.write(`smtpsift: warning: ${warning}\n`));
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

const COMMANDS: Record<string, (args: string[]) => number | Promise<number>> = { check, try: tryFilter };

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

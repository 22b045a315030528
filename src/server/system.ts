// Start-up checks that need the system, not just the file: shared by smtpsiftd and
// `smtpsift check`, so that check finds what the daemon would refuse.

import { statSync } from 'node:fs';
import { problemAt, type Config } from '../config/schema.js';
import { lookupUser, type Account } from './privileges.js';

export class StartupError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Checks that need the system, not just the file: the User account and TempDirectory. */
export function resolveSystem(config: Config, warn: (m: string) => void): Account | undefined {
  try {
    if (!statSync(config.tempDirectory).isDirectory()) throw new Error('not a directory');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such directory' : (e as Error).message;
    throw new StartupError(problemAt(config, 'tempDirectory', `${config.tempDirectory}: ${why}`), 2);
  }
  const isRoot = process.getuid?.() === 0;
  if (config.user === undefined) {
    if (isRoot) warn('running as root is NOT recommended; set User');
    return undefined;
  }
  const account = lookupUser(config.user);
  if (account === undefined) throw new StartupError(problemAt(config, 'user', `no such user '${config.user}'`), 2);
  if (!isRoot) {
    warn(`must be started as root to switch to user: ${config.user}`);
    return undefined;
  }
  return account;
}


// Dropping root after bind (issue #2: bind first, so port 25 works; proxsmtpd dropped first).

import { execFileSync } from 'node:child_process';
import { native } from '../native.js';

export interface Account {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups, the primary one included. */
  readonly groups: readonly number[];
  /** The home directory, for HOME once switched. */
  readonly home: string;
}

/** Looks a user up through NSS (`getent passwd`), by name or numeric uid. */
export function lookupUser(user: string): Account | undefined {
  try {
    const entry = execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const [name, , uid, gid, , home] = entry.trim().split('\n')[0]?.split(':') ?? [];
    if (name === undefined || uid === undefined || gid === undefined) return undefined;
    const ids = execFileSync('id', ['-G', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const groups = ids.trim().split(/\s+/).filter(Boolean).map(Number);
    return { name, uid: Number(uid), gid: Number(gid), groups, home: home || '/' };
  } catch {
    return undefined;
  }
}

/**
 * Groups, then gid, then uid: the order in which each step is still permitted.
 *
 * `keep`: capabilities the daemon still needs as the user (TransparentProxy full needs
 * CAP_NET_ADMIN for IP_TRANSPARENT on every upstream socket), kept as proxsmtpd keeps them:
 * PR_SET_KEEPCAPS so that setuid leaves the permitted set alone, then capset to exactly
 * these, effective and permitted. None is inheritable or ambient, so a filter exec'd as the
 * user has no capability at all. This is the main thread's set, the one that makes sockets.
 */
export function dropTo(account: Account, keep: readonly number[] = []): void {
  // What filters inherit names the user they run as, as login(1) would set it: a filter
  // as nobody with root's HOME had tools (spamc, gpg) look in /root and fail.
  process.env['HOME'] = account.home;
  process.env['USER'] = account.name;
  process.env['LOGNAME'] = account.name;
  process.setgroups?.(account.groups.length > 0 ? account.groups : [account.gid]);
  process.setgid?.(account.gid);
  if (keep.length === 0) {
    process.setuid?.(account.uid);
    return;
  }
  native.keepCaps(true);
  try {
    process.setuid?.(account.uid);
    native.limitCaps(keep);
  } finally {
    native.keepCaps(false);
  }
}

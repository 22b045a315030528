// Dropping root after bind (issue #2: bind first, so port 25 works; proxsmtpd dropped first).

import { execFileSync } from 'node:child_process';

export interface Account {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups, the primary one included. */
  readonly groups: readonly number[];
}

/** Looks a user up through NSS (`getent passwd`), by name or numeric uid. */
export function lookupUser(user: string): Account | undefined {
  try {
    const entry = execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const [name, , uid, gid] = entry.trim().split('\n')[0]?.split(':') ?? [];
    if (name === undefined || uid === undefined || gid === undefined) return undefined;
    const ids = execFileSync('id', ['-G', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const groups = ids.trim().split(/\s+/).filter(Boolean).map(Number);
    return { name, uid: Number(uid), gid: Number(gid), groups };
  } catch {
    return undefined;
  }
}

/** Groups, then gid, then uid: the order in which each step is still permitted. */
export function dropTo(account: Account): void {
  process.setgroups?.(account.groups.length > 0 ? account.groups : [account.gid]);
  process.setgid?.(account.gid);
  process.setuid?.(account.uid);
}

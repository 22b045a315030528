// lmdb maps a database file and trusts its pages: a file that is not an LMDB database
// (a route table given where its compiled form belongs, a log file, garbage) crashed the
// whole process with a segfault. So every file is looked at before lmdb opens it.

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The meta page's magic number (little-endian), after its page header. */
const MAGIC = 0xbeefc0de;
const MAGIC_AT = 24;

/**
 * Why `path` cannot be opened as an LMDB database, or undefined when it is one or does
 * not exist yet (lmdb creates it). As lmdb does, a path with no extension is a
 * directory holding data.mdb, and one with an extension is the data file itself.
 */
export function notLmdb(path: string): string | undefined {
  let data = path;
  try {
    if (statSync(path).isDirectory()) data = join(path, 'data.mdb');
  } catch {
    return undefined;
  }
  let fd: number;
  try {
    fd = openSync(data, 'r');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : (e as Error).message;
  }
  try {
    const head = Buffer.alloc(MAGIC_AT + 4);
    const n = readSync(fd, head, 0, head.length, 0);
    if (n === 0) return undefined; // empty: lmdb starts a new database in it
    if (n < head.length || head.readUInt32LE(MAGIC_AT) !== MAGIC) return data === path ? 'not an LMDB database' : `${data} is not an LMDB database`;
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Throws notLmdb()'s reason, if any. */
export function assertLmdb(path: string): void {
  const why = notLmdb(path);
  if (why !== undefined) throw new Error(why);
}

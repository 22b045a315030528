// `smtpsift makedb [-o DB] FILE`: Moxy's moxymakedbm for RouteType lmdb. The flat file is
// validated first (any error: `FILE:LINE: ...`, exit 2, the database untouched), then the
// database is replaced in ONE write transaction: a running daemon reads through LMDB's MVCC
// snapshots, so each lookup sees the whole old table or the whole new one, never a mix.

import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { openRouteDatabase } from '../routing/router.js';
import { readRouteFile } from '../routing/table.js';

export async function makedb(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { output: { type: 'string', short: 'o' } }, allowPositionals: true, strict: true });
  const [file, ...extra] = positionals;
  if (file === undefined || extra.length > 0) throw new Error('makedb needs exactly one route file');
  const entries = readRouteFile(file); // ConfigError: reported by main, exit 2
  const out = values.output ?? `${file}.db`;
  // lmdb would make missing directories: a mistyped -o must not succeed somewhere new.
  if (!existsSync(dirname(out))) throw new ConfigError([`${out}: no such directory: ${dirname(out)}`]);
  const db = openRouteDatabase(out, false);
  try {
    db.transactionSync(() => {
      db.clearSync();
      for (const e of entries) db.putSync(e.key, e.text);
    });
  } finally {
    await db.close();
  }
  process.stdout.write(`${out}: ${entries.length} routes written\n`);
  return 0;
}

// The part of lmdb (node-lmdb's successor, prebuilt from the registry; spec/node-ecosystem.md
// §10) that routing uses, typed here. lmdb 3.5.6's own index.d.ts ends in `export =`, which
// TypeScript refuses under `module: nodenext` ESM when library checking is on (we keep
// skipLibCheck off), so the package is loaded through require and given this interface.

import { createRequire } from 'node:module';
import { assertLmdb } from '../lmdb-file.js';

export interface LmdbDatabase {
  get(key: string): string | undefined;
  putSync(key: string, value: string): boolean;
  clearSync(): void;
  /** Runs `fn` in one write transaction: readers see all of it or none of it. */
  transactionSync<T>(fn: () => T): T;
  getKeys(options?: object): Iterable<string>;
  close(): Promise<void>;
}

interface LmdbModule {
  open(options: { path: string; encoding: 'string'; readOnly?: boolean }): LmdbDatabase;
}

const lmdb = createRequire(import.meta.url)('lmdb') as LmdbModule;

/** Values are the destination list text (encoding 'string', readable with mdb_dump). */
export function openLmdb(path: string, readOnly: boolean): LmdbDatabase {
  assertLmdb(path);
  return lmdb.open({ path, encoding: 'string', readOnly });
}

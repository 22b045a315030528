// MaxConnections and the connection ids, counted in a page of memory shared by the daemon's
// processes (native/cells.c) so that with Workers > 1 every worker process's listener takes
// from the same count: a connection is served only while fewer than MaxConnections are open
// in the whole daemon, whichever process accepted it; the ids stay proxsmtpd's one counter
// from 0x100000.

import { closeSync } from 'node:fs';
import { native } from '../native.js';

/** Cells of the shared page. */
const OPEN = 0;
const NEXT_ID = 1;
/** MaxConnections, or fewer when the open files limits have no room for them (setLimit). */
const LIMIT = 2;
const FIRST_ID = 0x100000;

export interface ConnectionSlots {
  /** One more open connection, unless the limit is reached (then false, nothing taken). */
  take(): boolean;
  /** A connection taken with take() is closed. */
  release(): void;
  /** The next connection id (unique in the daemon). */
  nextId(): number;
  /** Connections open in the whole daemon. */
  open(): number;
  /** The connections served at once. */
  limit(): number;
  /** Lowers (or raises) the limit for every listener sharing the page. */
  setLimit(max: number): void;
}

/** New counters for `max` connections, for this process alone. */
export function connectionSlots(max: number): ConnectionSlots {
  const { fd, slots } = sharedConnectionSlots(max);
  closeSync(fd); // the mapping stays
  return slots;
}

/**
 * New counters for `max` connections and the descriptor that worker processes map them
 * from (attachConnectionSlots); the caller closes it once they have it.
 */
export function sharedConnectionSlots(max: number): { readonly fd: number; readonly slots: ConnectionSlots } {
  const { fd, cells } = native.cellsCreate();
  native.cellsStore(cells, NEXT_ID, FIRST_ID);
  native.cellsStore(cells, LIMIT, max);
  return { fd, slots: over(cells) };
}

/** A worker process's view of the main process's counters. */
export function attachConnectionSlots(fd: number): ConnectionSlots {
  return over(native.cellsAttach(fd));
}

function over(cells: ArrayBuffer): ConnectionSlots {
  const { cellsLoad: load, cellsStore: store, cellsAdd: add, cellsCas: cas } = native;
  return {
    take() {
      // Compare-and-swap, so that a refused take never counts, not even for an instant. A
      // failed swap means another process took or released a slot: lock-free, so the bound
      // is never reached in practice; reaching it refuses this one connection.
      for (let attempt = 0; attempt < 100_000; attempt++) {
        const open = load(cells, OPEN);
        if (open >= load(cells, LIMIT)) return false;
        if (cas(cells, OPEN, open, open + 1) === open) return true;
      }
      return false;
    },
    release() {
      add(cells, OPEN, -1);
    },
    nextId() {
      // Wraps past 2^32 like any counter; ids only name sessions in the log.
      return add(cells, NEXT_ID, 1) >>> 0;
    },
    open() {
      return load(cells, OPEN);
    },
    limit() {
      return load(cells, LIMIT);
    },
    setLimit(limit: number) {
      store(cells, LIMIT, limit);
    },
  };
}

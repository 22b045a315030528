// MaxConnections and the connection ids, counted in a SharedArrayBuffer so that with
// Workers > 1 every worker thread's listener takes from the same count (Atomics): a
// connection is served only while fewer than MaxConnections are open in the whole daemon,
// whichever thread accepted it; the ids stay proxsmtpd's one counter from 0x100000.

/** Int32 slots of the shared buffer. */
const OPEN = 0;
const NEXT_ID = 1;
/** MaxConnections, or fewer when the open files limit has no room for them (setLimit). */
const LIMIT = 2;
const FIRST_ID = 0x100000;

export interface ConnectionSlots {
  /** The shared memory, for worker threads (workerData). */
  readonly buffer: SharedArrayBuffer;
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
  /** Lowers (or raises) the limit for every listener sharing the buffer. */
  setLimit(max: number): void;
}

/** New counters for `max` connections (no buffer), or a worker's view of the main thread's `buffer`. */
export function connectionSlots(max: number, buffer?: SharedArrayBuffer): ConnectionSlots {
  const shared = buffer ?? new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
  const cells = new Int32Array(shared);
  if (buffer === undefined) {
    Atomics.store(cells, NEXT_ID, FIRST_ID);
    Atomics.store(cells, LIMIT, max);
  }
  return {
    buffer: shared,
    take() {
      // Compare-and-swap, so that a refused take never counts, not even for an instant. A
      // failed swap means another thread took or released a slot: lock-free, so the bound
      // is never reached in practice; reaching it refuses this one connection.
      for (let attempt = 0; attempt < 100_000; attempt++) {
        const open = Atomics.load(cells, OPEN);
        if (open >= Atomics.load(cells, LIMIT)) return false;
        if (Atomics.compareExchange(cells, OPEN, open, open + 1) === open) return true;
      }
      return false;
    },
    release() {
      Atomics.sub(cells, OPEN, 1);
    },
    nextId() {
      // Wraps past 2^31 like any counter; ids only name sessions in the log.
      return Atomics.add(cells, NEXT_ID, 1) >>> 0;
    },
    open() {
      return Atomics.load(cells, OPEN);
    },
    limit() {
      return Atomics.load(cells, LIMIT);
    },
    setLimit(limit: number) {
      Atomics.store(cells, LIMIT, limit);
    },
  };
}

// Received bytes are garbage soon after: each read of a socket or pipe is a new buffer
// (Node allocates one per read), passed to the spool (or scanned for a filter's last stderr
// line) and then dropped. V8 frees such buffers only at a garbage collection, and a large
// transfer allocates so little JavaScript that none comes for tens of megabytes: a 50 MB
// message left ~30 MB of dead read buffers in the daemon's resident memory at its peak
// (issue 7: peak RSS under 100 MB). So after every COLLECT_EVERY bytes received, in the
// whole process, the young generation is collected (a scavenge: about a millisecond, and
// these buffers are young), and once such transfers pause, glibc gives the pages so freed
// back (malloc_trim: its heaps keep free pages in their middle). That bounds what a message
// of any size leaves behind: measured on a 50 MB message, the peak over the daemon's
// resident memory before it went from +33 MB to +9 MB on a fresh daemon; after a load of
// 3,000 small and 200 1 MB messages, the daemon's resident memory went from 103-104 MB to
// 77-81 MB (74 MB a second after the load, with the trim put off).

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { native } from '../native.js';

const COLLECT_EVERY = 8 * 1024 * 1024;

type Collect = (options: { type: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

/** V8's gc() without --expose-gc on the command line: the flag, then a context that has it. */
function exposeGc(): Collect | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as Collect) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * glibc gives the freed pages back once large transfers pause this long, not while they go
 * on: a page given back is a page fault and a zeroed page when the next read buffer takes
 * it again. Trimming at every collection cost 150 page faults per 1 MB message (4 clients at
 * once, `CutThrough: on`: 12-15% of the daemon's CPU); while a transfer goes on, glibc
 * reuses the collected buffers for the next reads instead.
 */
const TRIM_AFTER_MS = 1000;

const collect = exposeGc();
let since = 0;
let trimTimer: NodeJS.Timeout | undefined;

function trim(): void {
  trimTimer = undefined;
  native.trimMemory();
}

/** `bytes` more read (a message's, a filter's stderr) and handed on. */
export function received(bytes: number): void {
  since += bytes;
  if (since < COLLECT_EVERY) return;
  since = 0;
  collect?.({ type: 'minor' });
  if (trimTimer === undefined) trimTimer = setTimeout(trim, TRIM_AFTER_MS).unref();
  else trimTimer.refresh();
}

// Received bytes are garbage soon after: each read of a socket or pipe is a new buffer
// (Node allocates one per read), passed to the spool (or scanned for a filter's last
// stderr line) and then dropped. V8 frees such buffers only at a
// garbage collection, and a large transfer allocates so little JavaScript that none comes
// for tens of megabytes: a 50 MB message left ~30 MB of dead read buffers in the daemon's
// resident memory at its peak (issue 7: peak RSS under 100 MB). So after every
// COLLECT_EVERY bytes received, in the whole process, the young generation is
// collected (a scavenge: about a millisecond, and these buffers are young), and glibc gives
// the pages so freed back (malloc_trim: its heaps keep free pages in their middle). That
// bounds what a message of any size leaves behind: measured on a 50 MB message, the peak
// over the daemon's resident memory before it went from +33 MB to +9 MB on a fresh daemon;
// after a load of 3,000 small and 200 1 MB messages, the daemon's resident memory went
// from 103-104 MB to 77-81 MB. 1 MB messages at concurrency 4 cost no more CPU.

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

const collect = exposeGc();
let since = 0;

/** `bytes` more read (a message's, a filter's stderr) and handed on. */
export function received(bytes: number): void {
  since += bytes;
  if (since < COLLECT_EVERY) return;
  since = 0;
  collect?.({ type: 'minor' });
  native.trimMemory();
}

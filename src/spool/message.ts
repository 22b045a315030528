// One message as DATA receives it: in memory while it is small, in a private spool file once
// it outgrows IN_MEMORY_MAX (issue 7 allows this, with a fixed bound, so that memory per
// session stays bounded). A filter reads a file, so a message that will be filtered goes to
// the file from its first byte, and a spool that cannot be used is a 451 before any data.

import { once } from 'node:events';
import { SiftError } from '../errors.js';
import type { Spool, SpoolFile } from './spool.js';

/**
 * The most a message may hold in memory. Small unfiltered mail (most of it) then never
 * touches the disk: no open, write, close and unlink through the thread pool between the
 * client's '.' and the upstream's 250.
 */
export const IN_MEMORY_MAX = 64 * 1024;

export class MessageStore {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private file: SpoolFile | undefined;
  /** The first failure of the spool; later pieces are then read and dropped. */
  private failure: SiftError | undefined;

  /** With `toFile`, the spool file is made now: throws the SPOOL_FAILED error if it cannot be. */
  constructor(
    private readonly spool: Spool,
    toFile: boolean,
  ) {
    if (toFile) this.file = this.watch(spool.open());
  }

  get error(): SiftError | undefined {
    return this.failure;
  }

  /** Takes a piece of the message; resolves when the file can take more (backpressure). */
  async write(part: Buffer): Promise<void> {
    if (this.failure !== undefined) return;
    if (this.file === undefined) {
      if (this.heldBytes + part.length <= IN_MEMORY_MAX) {
        this.held.push(part);
        this.heldBytes += part.length;
        return;
      }
      if (!this.spill()) return;
    }
    const file = this.file;
    if (file !== undefined && !file.stream.write(part)) await drainedOrClosed(file).catch((e: Error) => this.failed(e));
  }

  /**
   * The whole message, once the client's data has ended: its bytes when it stayed in memory,
   * else the path of its flushed and closed spool file. Rejects with the spool's failure.
   */
  async finish(): Promise<string | Buffer> {
    if (this.failure !== undefined) throw this.failure;
    if (this.file === undefined) return this.held.length === 1 ? (this.held[0] as Buffer) : Buffer.concat(this.held, this.heldBytes);
    await this.file.finish();
    return this.file.path;
  }

  /** Removes the spool file, if one was made (design invariant 6). */
  remove(): void {
    this.file?.remove();
    this.held = [];
  }

  /** Moves what is held into a new spool file; false when the file cannot be made. */
  private spill(): boolean {
    try {
      this.file = this.watch(this.spool.open());
    } catch (e) {
      if (!(e instanceof SiftError)) throw e;
      this.failure = e;
      this.held = [];
      return false;
    }
    for (const held of this.held) this.file.stream.write(held);
    this.held = [];
    return true;
  }

  private watch(file: SpoolFile): SpoolFile {
    file.stream.on('error', (e: Error) => this.failed(e));
    return file;
  }

  private failed(e: Error): void {
    this.failure ??= new SiftError('SPOOL_FAILED', `writing ${this.file?.path ?? 'the spool'}: ${e.message}`);
  }
}

/** Waits for the spool file to take more, or to fail; leaves no listener behind. */
async function drainedOrClosed(file: SpoolFile): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([once(file.stream, 'drain', { signal: ac.signal }), once(file.stream, 'close', { signal: ac.signal })]);
  } finally {
    ac.abort();
  }
}

// One message as DATA receives it: in memory while it is small, in a private spool file once
// it outgrows IN_MEMORY_MAX (issue 7 allows this, with a fixed bound, so that memory per
// session stays bounded). A filter reads a file, so a message that will be filtered goes to
// the file from its first byte, and a spool that cannot be used is a 451 before any data.

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
    if (toFile) this.file = spool.open();
  }

  /** Takes a piece of the message. A failure is kept for finish(), and the rest dropped. */
  write(part: Buffer): void {
    if (this.failure !== undefined) return;
    try {
      if (this.file !== undefined) return this.file.write(part);
      this.held.push(part);
      this.heldBytes += part.length;
      if (this.heldBytes <= IN_MEMORY_MAX) return;
      // Too big for memory: from now on, the spool file.
      const file = (this.file = this.spool.open());
      for (const held of this.held) file.write(held);
      this.held = [];
    } catch (e) {
      if (!(e instanceof SiftError)) throw e;
      this.failure = e;
      this.held = [];
    }
  }

  /**
   * The whole message, once the client's data has ended: its bytes when it stayed in memory,
   * else the path of its closed spool file. Throws the spool's failure.
   */
  finish(): string | Buffer {
    if (this.failure !== undefined) throw this.failure;
    if (this.file === undefined) return this.held.length === 1 ? (this.held[0] as Buffer) : Buffer.concat(this.held, this.heldBytes);
    this.file.finish();
    return this.file.path;
  }

  /** Removes the spool file, if one was made (design invariant 6). */
  remove(): void {
    this.file?.remove();
    this.held = [];
  }
}

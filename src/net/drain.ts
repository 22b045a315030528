// Waiting for a writable stream to take more. Plain listeners rather than events.once()
// with an AbortController: aborting one builds a DOMException with a stack trace on every
// wait, a measurable cost when a large message waits on the socket hundreds of times.

import type { Writable } from 'node:stream';

export type DrainResult = { readonly kind: 'drain' | 'close' | 'timeout' } | { readonly kind: 'error'; readonly error: Error };

/** Resolves on 'drain', 'close', 'error' or the timeout, whichever comes first; leaves no listener behind. */
export function drained(stream: Writable, timeoutMs: number): Promise<DrainResult> {
  return new Promise((resolve) => {
    const done = (result: DrainResult): void => {
      clearTimeout(timer);
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      stream.off('error', onError);
      resolve(result);
    };
    const onDrain = (): void => done({ kind: 'drain' });
    const onClose = (): void => done({ kind: 'close' });
    const onError = (error: Error): void => done({ kind: 'error', error });
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    stream.on('drain', onDrain);
    stream.on('close', onClose);
    stream.on('error', onError);
  });
}

/**
 * Writes `data` and waits until the stream is done with it, so that the caller may fill the
 * same buffer again (a delivery reuses its buffers, issue 7). Undefined when the stream took
 * all of it at once (nothing queued: the usual case while the peer keeps up); otherwise
 * resolves on the write's callback ('drain'), 'close', 'error' or the timeout.
 */
export function written(stream: Writable, data: Buffer, timeoutMs: number): Promise<DrainResult> | undefined {
  let settle: ((result: DrainResult) => void) | undefined;
  let early: DrainResult | undefined;
  stream.write(data, (error) => {
    const result: DrainResult = error ? { kind: 'error', error } : { kind: 'drain' };
    if (settle) settle(result);
    else early = result;
  });
  if (stream.writableLength === 0) return undefined;
  return new Promise((resolve) => {
    const done = (result: DrainResult): void => {
      clearTimeout(timer);
      settle = undefined;
      stream.off('close', onClose);
      stream.off('error', onError);
      resolve(result);
    };
    const onClose = (): void => done({ kind: 'close' });
    const onError = (error: Error): void => done({ kind: 'error', error });
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    stream.on('close', onClose);
    stream.on('error', onError);
    settle = done;
    if (early !== undefined) done(early);
  });
}

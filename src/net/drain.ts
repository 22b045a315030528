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

// KeepAlives (proxsmtpd.conf(5)): while the client's data is read and the filter runs, the
// upstream session sits idle with MAIL and RCPT done; a NOOP every N seconds keeps it from
// timing out (proxsmtpd sent none during the filter run: bug B6).

import { dialogue, type Logger } from '../log/logger.js';
import type { Upstream } from './upstream.js';

export interface KeepAlive {
  /** Stops the NOOPs; resolves once no NOOP is in flight, so the upstream is ours again. */
  stop(): Promise<void>;
}

export function keepAlive(upstream: Upstream, seconds: number, log: Logger): KeepAlive {
  if (seconds <= 0) return { stop: async () => undefined };
  let stopped = false;
  let inFlight: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    if (stopped || upstream.isClosed) return;
    inFlight = inFlight.then(async () => {
      if (stopped) return;
      try {
        dialogue(log, 'SERVER >', 'NOOP');
        const r = await upstream.send('NOOP\r\n');
        dialogue(log, 'SERVER <', r.wire);
      } catch (e) {
        // The DATA that follows meets the same failure and answers the client for it.
        log.warn(`keepalive NOOP failed: ${(e as Error).message}`);
      }
    });
  }, seconds * 1000);
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await inFlight;
    },
  };
}

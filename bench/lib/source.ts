// Postfix's smtp-source as the load generator. Without -A it aborts on any reply other
// than the expected positive one, so a clean exit means every message got its 250; the
// sink's own counter is checked as well, so a message "accepted" but never relayed shows.

import { run } from './processes.js';
import type { Sink } from './sink.js';

export const SMTP_SOURCE = '/usr/sbin/smtp-source';

export interface Load {
  /** Parallel sessions (-s). */
  readonly concurrency: number;
  /** Payload bytes per message (-l), not counting smtp-source's few header lines. */
  readonly size: number;
  /** Recipients per message (-r). */
  readonly recipients?: number;
  /** Reuse connections for further messages (-d) instead of one connection per message. */
  readonly reuse?: boolean;
}

export interface SourceResult {
  readonly messages: number;
  readonly seconds: number;
  readonly perSecond: number;
  /** Messages smtp-sink saw during the run (should equal `messages`). */
  readonly sunk: number;
  readonly ok: boolean;
  readonly problem: string | undefined;
}

export function sourceArgs(load: Load, messages: number, port: number): string[] {
  return [
    '-4',
    // Retry a connection refused with RESET (a full listen queue on some stacks).
    '-C', '5',
    '-M', 'bench.invalid',
    '-f', 'sender@bench.invalid',
    '-t', 'rcpt@bench.invalid',
    '-s', String(load.concurrency),
    '-m', String(messages),
    '-l', String(load.size),
    ...(load.recipients !== undefined && load.recipients > 1 ? ['-r', String(load.recipients)] : []),
    ...(load.reuse === true ? ['-d'] : []),
    `127.0.0.1:${port}`,
  ];
}

export async function runSource(load: Load, messages: number, port: number, sink: Sink, timeoutMs: number): Promise<SourceResult> {
  const before = sink.received;
  const r = await run(SMTP_SOURCE, sourceArgs(load, messages, port), timeoutMs);
  const sunk = (await sink.settle(before + messages)) - before;
  const seconds = r.ms / 1000;
  let problem: string | undefined;
  if (r.status !== 0) problem = `smtp-source exit ${r.status ?? r.signal}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
  else if (sunk !== messages) problem = `smtp-sink received ${sunk} of ${messages} messages`;
  return { messages, seconds, perSecond: messages / seconds, sunk, ok: problem === undefined, problem };
}

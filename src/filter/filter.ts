// One message through the configured filter, the same code path for the daemon and for
// `smtpsift try`: run it, read its verdict, and say which file is the message to send.

import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { daemonEnv, filterEnv, type FilterFacts } from './env.js';
import { runFilter } from './run.js';
import { LOCAL_ERROR, verdictOf, type Verdict } from './verdict.js';

export interface FilterRequest {
  readonly config: Config;
  readonly log: Logger;
  /** The spooled message, dot-unstuffed, as the client sent it. */
  readonly message: string;
  /** A fresh private path for the filter's output (pipe mode). */
  readonly output: string;
  readonly facts: Omit<FilterFacts, 'email' | 'tmpdir'>;
}

export interface FilterOutcome {
  readonly verdict: Verdict;
  /** With an accept: the file to send (the filter's output in pipe mode, else the message). */
  readonly send: string;
  readonly ms: number;
}

export async function filterMessage(req: FilterRequest): Promise<FilterOutcome> {
  const { config, log } = req;
  const command = config.filterCommand;
  if (command === undefined) return { verdict: { action: 'accept' }, send: req.message, ms: 0 };
  const file = config.filterType === 'file';
  const started = Date.now();
  const run = runFilter({
    command,
    stdin: file ? undefined : req.message,
    stdout: file ? undefined : req.output,
    env: filterEnv(daemonEnv(), { ...req.facts, email: file ? req.message : undefined, tmpdir: config.tempDirectory }),
    timeoutMs: config.filterTimeout * 1000,
  });
  log.debug(`executed filter command: ${command} (pid: ${run.pid ?? 'none'})`);
  const end = await run.ended;
  const ms = Date.now() - started;
  if (end.kind === 'exit') log.debug(`filter exit code: ${end.code}`);
  const verdict = verdictOf(end);
  // A filter that could not decide is the operator's problem: say so at warning level.
  if (verdict.action === 'tempfail' && verdict.reply === LOCAL_ERROR) log.warn(`filter: ${verdict.why}`);
  return { verdict, send: file ? req.message : req.output, ms };
}

// Filter suites (issue 3): a private directory for the test's shell filters and what they
// leave behind, a relay whose config may name those scripts, and a message sent in one go.

import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './daemon.js';
import { withRelay, type Relay } from './relay.js';
import type { RawClient } from './client.js';
import type { RecordingUpstream, UpstreamOptions } from './upstream.js';

export interface Scripts {
  /** The private directory (no spaces in its path, so it can go into a command line as is). */
  readonly dir: string;
  /** Writes an executable `/bin/sh` script; returns its path. */
  script(name: string, body: string): string;
  /** A path in the directory. */
  path(name: string): string;
  /** A file the filter wrote, or undefined if it wrote none. */
  read(name: string): string | undefined;
}

export function scripts(dir: string): Scripts {
  const path = (name: string): string => join(dir, name);
  return {
    dir,
    path,
    script(name, body) {
      const p = path(name);
      writeFileSync(p, `#!/bin/sh\n${body}\n`);
      chmodSync(p, 0o755);
      return p;
    },
    read: (name) => (existsSync(path(name)) ? readFileSync(path(name), 'latin1') : undefined),
  };
}

/**
 * A relay (test/helpers/relay.ts) whose config is built with the test's scripts directory at
 * hand; the directory is removed afterwards, whatever happened.
 */
export async function withFilter(
  opts: { upstream?: UpstreamOptions; config: (sc: Scripts, up: RecordingUpstream) => Record<string, string> },
  fn: (r: Relay, sc: Scripts) => Promise<void>,
): Promise<void> {
  const t = tempDir('smtpsift-filter-');
  const sc = scripts(t.dir);
  try {
    await withRelay({ upstream: opts.upstream, config: (up) => opts.config(sc, up) }, (r) => fn(r, sc));
  } finally {
    t.remove();
  }
}

/**
 * MAIL, the RCPTs and DATA (each reply checked), then the body and the end of data in one
 * write; resolves the final reply. `body` is what goes on the wire (already dot-stuffed).
 */
export async function sendMessage(c: RawClient, from: string, to: readonly string[], body: string, timeoutMs = 10_000): Promise<string> {
  assert.match(await c.command(`MAIL FROM:<${from}>`), /^250 /);
  for (const r of to) assert.match(await c.command(`RCPT TO:<${r}>`), /^(250|550) /);
  assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
  c.send(`${body}.\r\n`);
  return c.reply(timeoutMs);
}

/** `NAME=value` pairs of `env -0` output. */
export function parseEnv0(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of text.split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

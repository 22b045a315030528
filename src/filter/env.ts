// The filter's environment (proxsmtpd(8) FILTER SCRIPTS): the daemon's own, plus what is
// known of this message. Unknown values are absent, never empty. Client-supplied values
// reach the filter only as data here, never through a shell command line.
//
// The entries are bytes ("NAME=value" Buffers for exec): protocol text is held as latin1
// (one char per byte) and goes out as the bytes the client sent, valid UTF-8 or not, as
// proxsmtpd passed them; paths and the inherited environment are Node strings, UTF-8.

const OURS = ['SENDER', 'RECIPIENTS', 'CLIENT', 'SERVER', 'REMOTE', 'REMOTE_HELO', 'EMAIL', 'TMPDIR'] as const;

/** sender to remoteHelo are protocol text, latin1; email and tmpdir are paths (UTF-8). */
export interface FilterFacts {
  readonly sender: string | undefined;
  readonly recipients: readonly string[];
  readonly client: string | undefined;
  readonly server: string | undefined;
  readonly remote: string | undefined;
  readonly remoteHelo: string | undefined;
  /** File mode only: the message's path. */
  readonly email: string | undefined;
  readonly tmpdir: string;
}

/** `NAME=value` entries for exec. */
export type FilterEnv = readonly Buffer[];

/** An environment string cannot hold NUL: each one is left out, rather than ending the value there. */
const entry = (name: string, value: string, encoding: 'latin1' | 'utf8'): Buffer =>
  Buffer.concat([Buffer.from(`${name}=`), Buffer.from(value.replace(/\0/g, ''), encoding)]);

let inherited: NodeJS.ProcessEnv | undefined;

/**
 * The daemon's own environment, copied once: process.env reads the C environment on every
 * access, and copying it for each message cost about 0.35 ms. The daemon never changes it.
 */
export function daemonEnv(): NodeJS.ProcessEnv {
  inherited ??= { ...process.env };
  return inherited;
}

/** The entries of an environment without ours, made once per environment (the daemon's never changes). */
const baseEntries = new WeakMap<NodeJS.ProcessEnv, readonly Buffer[]>();

function entriesOf(base: NodeJS.ProcessEnv): readonly Buffer[] {
  let entries = baseEntries.get(base);
  if (entries === undefined) {
    const ours = new Set<string>(OURS);
    entries = Object.entries(base).flatMap(([name, value]) => (ours.has(name) || value === undefined ? [] : [entry(name, value, 'utf8')]));
    baseEntries.set(base, entries);
  }
  return entries;
}

export function filterEnv(base: NodeJS.ProcessEnv, f: FilterFacts): FilterEnv {
  const env: Buffer[] = [...entriesOf(base)];
  const set = (name: (typeof OURS)[number], value: string | undefined, encoding: 'latin1' | 'utf8' = 'latin1'): void => {
    if (value !== undefined) env.push(entry(name, value, encoding));
  };
  set('SENDER', f.sender);
  set('RECIPIENTS', f.recipients.length > 0 ? f.recipients.join('\n') : undefined);
  set('CLIENT', f.client);
  set('SERVER', f.server);
  set('REMOTE', f.remote);
  set('REMOTE_HELO', f.remoteHelo);
  set('EMAIL', f.email, 'utf8');
  set('TMPDIR', f.tmpdir, 'utf8');
  return env;
}

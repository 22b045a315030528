// The filter's environment (proxsmtpd(8) FILTER SCRIPTS): the daemon's own, plus what is
// known of this message. Unknown values are absent, never empty. Client-supplied values
// reach the filter only as data here, never through a shell command line.

const OURS = ['SENDER', 'RECIPIENTS', 'CLIENT', 'SERVER', 'REMOTE', 'REMOTE_HELO', 'EMAIL', 'TMPDIR'] as const;

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

/**
 * Protocol text is held as latin1 (one char per byte); the environment is passed as UTF-8,
 * so the bytes the client sent are turned back into bytes first. NUL cannot be passed.
 */
const asEnv = (v: string): string => Buffer.from(v, 'latin1').toString('utf8').replace(/\0/g, '');

let inherited: NodeJS.ProcessEnv | undefined;

/**
 * The daemon's own environment, copied once: process.env reads the C environment on every
 * access, and copying it for each message cost about 0.35 ms. The daemon never changes it.
 */
export function daemonEnv(): NodeJS.ProcessEnv {
  inherited ??= { ...process.env };
  return inherited;
}

export function filterEnv(base: NodeJS.ProcessEnv, f: FilterFacts): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const name of OURS) delete env[name];
  const set = (name: (typeof OURS)[number], value: string | undefined): void => {
    if (value !== undefined) env[name] = asEnv(value);
  };
  set('SENDER', f.sender);
  set('RECIPIENTS', f.recipients.length > 0 ? f.recipients.join('\n') : undefined);
  set('CLIENT', f.client);
  set('SERVER', f.server);
  set('REMOTE', f.remote);
  set('REMOTE_HELO', f.remoteHelo);
  set('EMAIL', f.email);
  set('TMPDIR', f.tmpdir);
  return env;
}

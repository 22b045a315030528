/** Why a configuration value is refused; the parser adds FILE:LINE and the option name. */
export class ValueError extends Error {}

/** A configuration problem, already phrased as `FILE:LINE: what is wrong`. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
  }
}

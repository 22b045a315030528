// POSIX getopt, as proxsmtpd parses its flags: `-d 4`, `-d4`, `-ffile`, `-vd3` all work.

export class UsageError extends Error {}

/** `spec` is getopt's optstring, e.g. 'd:f:p:v'. */
export function getopt(args: readonly string[], spec: string): { opts: Map<string, string | true>; rest: string[] } {
  const opts = new Map<string, string | true>();
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j] ?? '';
      const at = spec.indexOf(flag);
      if (flag === ':' || at < 0) throw new UsageError(`unknown option -${flag}`);
      if (spec[at + 1] !== ':') {
        opts.set(flag, true);
        continue;
      }
      const value = j + 1 < arg.length ? arg.slice(j + 1) : args[++i];
      if (value === undefined) throw new UsageError(`option -${flag} needs a value`);
      opts.set(flag, value);
      break;
    }
  }
  return { opts, rest: args.slice(i) };
}

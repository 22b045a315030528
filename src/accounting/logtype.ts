// LogType and the start-up checks it implies: pure functions, kept apart from the sinks so
// that reading a configuration does not load lmdb's native module.

export type LogType = 'nolog' | 'filelog' | 'syslog' | 'counters' | 'syslog+counters' | 'filelog+counters';

const LOG_TYPES: Record<string, LogType> = {
  nolog: 'nolog',
  filelog: 'filelog',
  syslog: 'syslog',
  counters: 'counters',
  'syslog+counters': 'syslog+counters',
  'filelog+counters': 'filelog+counters',
  // Moxy's names (reference/moxy-setup.txt, logging section).
  gdbmlog: 'counters',
  sys_and_gdbmlog: 'syslog+counters',
};

/** For the LogType schema row: canonical value, or an Error message listing the choices. */
export function parseLogType(text: string): LogType {
  const t = LOG_TYPES[text.toLowerCase()];
  if (t === undefined) throw new Error(`'${text}' is not one of ${Object.keys(LOG_TYPES).join(', ')}`);
  return t;
}

/**
 * Start-up checks beyond each option's own: the files a LogType needs. With counters and
 * no CounterDatabase, LogFile names the database, as Moxy's gdbmlog used logfile_name.
 */
export function accountingProblems(o: { readonly logType: LogType; readonly logFile?: string | undefined; readonly counterDatabase?: string | undefined }): string[] {
  const problems: string[] = [];
  const file = o.logType === 'filelog' || o.logType === 'filelog+counters';
  const counters = o.logType.endsWith('counters');
  if (file && !o.logFile) problems.push(`LogType ${o.logType} needs LogFile`);
  if (counters && !o.counterDatabase && (file || !o.logFile)) problems.push(`LogType ${o.logType} needs CounterDatabase`);
  return problems;
}

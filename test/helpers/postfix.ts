// A private, throw-away Postfix instance for the integration tests: its own config, queue,
// data and mail directories and log file under one temp dir, loopback ports only, and both
// ways of putting smtpsiftd in the mail path (../shared/spec/postfix-integration.md §2):
//
//   A, after-queue:  client → entryAfterQueue smtpd → queue → "scan" smtp(8) with
//                    content_filter=scan:[127.0.0.1]:proxyPort → smtpsiftd → reinjectPort smtpd
//   B, before-queue: client → entryBeforeQueue smtpd (smtpd_proxy_filter=127.0.0.1:proxyPort)
//                    → smtpsiftd → reinjectPort smtpd
//
// The reinjection smtpd is shared by both modes; everything it accepts is delivered by
// virtual(8) into one catch-all Maildir, and `mailbox(addr)` picks the copies by the
// Delivered-To: header virtual(8) puts on top. Bounces come from MAILER-DAEMON and go to
// the envelope sender, which is an ordinary *@e2e.test mailbox.
//
// Every Postfix command is run with `-c <our config dir>`, and main.cf names our own
// queue_directory, data_directory and meta_directory, so the system instance, its queue and
// /etc/postfix are never touched, and nothing in /etc/postfix is needed (CI installs the
// package with "No configuration"). The master runs in its own session (master(8) calls
// setsid), which is how stop() finds and kills anything left over, by PID.
//
//   const { pf, d, stop } = await startPostfixRelay({ daemon: { FilterCommand: '...' } });
//   await send(pf.entryAfterQueue, ...); await pf.waitForMail('rcpt@e2e.test', 1);
//   await pf.waitForEmptyQueue(); pf.mailbox('rcpt@e2e.test'); pf.queue(); pf.flush(); pf.log()

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, openSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type RunResult } from './process.js';
import { startDaemon, type Daemon, type StartOptions } from './daemon.js';

export const POSTFIX = '/usr/sbin/postfix';
export const POSTQUEUE = '/usr/sbin/postqueue';
export const POSTCONF = '/usr/sbin/postconf';
/** Debian's daemon_directory: master(8) and the daemons it runs. */
export const DAEMON_DIRECTORY = '/usr/lib/postfix/sbin';

/** The mail domain of every instance: any `*@e2e.test` address is a deliverable mailbox. */
export const DOMAIN = 'e2e.test';

/** Refused by every instance's reinjection smtpd at RCPT (`check_recipient_access`). */
export const REFUSED_RCPT = `refused@${DOMAIN}`;
export const REFUSED_RCPT_REPLY = '550 5.1.1 E2E refused by reinjection';

export interface PostfixPorts {
  /** A: the after-queue entry smtpd (content_filter=scan:[127.0.0.1]:proxy). */
  readonly entryAfterQueue: number;
  /** B: the before-queue entry smtpd (smtpd_proxy_filter=127.0.0.1:proxy). */
  readonly entryBeforeQueue: number;
  /** The reinjection (after-filter) smtpd: smtpsiftd's OutAddress. */
  readonly reinject: number;
  /** Where Postfix expects smtpsiftd. */
  readonly proxy: number;
}

export interface PostfixOptions {
  /** Ports to use; any not given is picked free on 127.0.0.1 (and re-picked if the bind fails). */
  ports?: Partial<PostfixPorts>;
  /** Shorthand for `ports.proxy`. */
  proxyPort?: number;
  /**
   * Recipients the reinjection smtpd refuses at RCPT: address → reply (`550 5.1.1 text`,
   * `450 4.2.0 text`, as check_recipient_access takes it). Always has REFUSED_RCPT.
   */
  refuseRecipients?: Record<string, string>;
  /** Senders the reinjection smtpd refuses at end of data: address → reply. */
  refuseSenders?: Record<string, string>;
  /** Extra or overriding main.cf parameters (e.g. `{ smtpd_proxy_timeout: '20s' }`). */
  main?: Record<string, string>;
  /**
   * When deferred mail is retried. `on-flush` (default): only when the test calls flush(), so
   * "it stays deferred" is deterministic and a filter runs once per attempt the test made.
   * `fast`: also by itself, every 1-2 s. `postqueue -f` retries at once either way: it
   * ignores the backoff and revives a destination marked dead (measured: ~0.1 s).
   */
  retry?: 'on-flush' | 'fast';
  /** Process limit of the scan transport (FILTER_README: 10). */
  scanMaxproc?: number;
}

/** One message in the queue, as `postqueue -j` reports it (postqueue(1), "JSON OBJECT FORMAT"). */
export interface QueuedMessage {
  readonly queue_name: 'maildrop' | 'incoming' | 'active' | 'deferred' | 'hold' | string;
  readonly queue_id: string;
  readonly arrival_time: number;
  readonly message_size: number;
  readonly forced_expire?: boolean;
  readonly sender: string;
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly delay_reason?: string }>;
}

/** A delivered message: the Maildir file, the address it was delivered to, its bytes (LF lines). */
export interface Delivered {
  readonly file: string;
  readonly to: string;
  readonly content: string;
}

/** Why the Postfix tests cannot run here, or undefined if they can. */
export function postfixUnavailable(): string | undefined {
  if (!existsSync(POSTFIX) || !existsSync(`${DAEMON_DIRECTORY}/master`)) return 'Postfix is not installed (apt-get install postfix)';
  if (process.getuid?.() !== 0) return 'a private Postfix instance must be started as root';
  if (lookupId('/etc/passwd', 'postfix') === undefined || lookupId('/etc/group', 'postdrop') === undefined) {
    return 'the postfix user or the postdrop group is missing (the Debian package creates them)';
  }
  return undefined;
}

/** Every instance not yet stopped, killed at exit if a test forgot (or crashed before) stop(). */
const running = new Set<Postfix>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const pf of running) pf.abandon();
  });
  // node --test stops a timed-out file with SIGTERM; 'exit' does not run on a signal death.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      for (const pf of running) pf.abandon();
      process.kill(process.pid, sig);
    });
  }
}

let instances = 0;

export class Postfix {
  /** Short and unique per process: myhostname `<name>.e2e.test`, syslog_name `postfix-<name>`. */
  readonly name: string;
  readonly dir: string;
  readonly configDir: string;
  readonly queueDir: string;
  readonly dataDir: string;
  /** The catch-all Maildir every *@e2e.test message is delivered into. */
  readonly maildir: string;
  readonly logFile: string;
  readonly myhostname: string;
  private masterPid = 0;
  private commands = 0;
  /** Postfix commands still running (abandon() kills them, e.g. a `postfix start` half done). */
  private readonly inFlight = new Set<ChildProcess>();
  private stopped: Promise<void> | undefined;

  private constructor(
    private currentPorts: PostfixPorts,
    private opts: PostfixOptions,
  ) {
    this.name = `e2e${process.pid}x${++instances}`;
    this.myhostname = `${this.name}.${DOMAIN}`;
    this.dir = mkdtempSync(join(tmpdir(), 'smtpsift-postfix-'));
    // Postfix's own users must reach the queue, the log and the mailboxes below it.
    chmodSync(this.dir, 0o755);
    this.configDir = join(this.dir, 'etc');
    this.queueDir = join(this.dir, 'queue');
    this.dataDir = join(this.dir, 'data');
    this.maildir = join(this.dir, 'mail', 'all');
    this.logFile = join(this.dir, 'postfix.log');
  }

  get ports(): PostfixPorts {
    return this.currentPorts;
  }
  get entryAfterQueue(): number {
    return this.ports.entryAfterQueue;
  }
  get entryBeforeQueue(): number {
    return this.ports.entryBeforeQueue;
  }
  get reinjectPort(): number {
    return this.ports.reinject;
  }
  get proxyPort(): number {
    return this.ports.proxy;
  }
  /** The running master's PID (0 before start and after stop). */
  get pid(): number {
    return this.masterPid;
  }

  /** Free loopback ports for an instance, to know them (e.g. for smtpsiftd's OutAddress) before start. */
  static async ports(given: Partial<PostfixPorts> = {}): Promise<PostfixPorts> {
    const taken = new Set(Object.values(given));
    const pick = async (): Promise<number> => {
      for (let i = 0; i < 20; i++) {
        const p = await freePort();
        if (!taken.has(p)) {
          taken.add(p);
          return p;
        }
      }
      throw new Error('no distinct free port');
    };
    return {
      entryAfterQueue: given.entryAfterQueue ?? (await pick()),
      entryBeforeQueue: given.entryBeforeQueue ?? (await pick()),
      reinject: given.reinject ?? (await pick()),
      proxy: given.proxy ?? (await pick()),
    };
  }

  /**
   * Writes a fresh instance and starts it (`postfix -c DIR start`, which returns once the
   * master has bound its ports). A port the caller did not fix is re-picked, up to three
   * times, when another process took it in the meantime.
   */
  static async start(opts: PostfixOptions = {}): Promise<Postfix> {
    const unavailable = postfixUnavailable();
    if (unavailable !== undefined) throw new Error(unavailable);
    hookExit();
    const fixed: Partial<PostfixPorts> = { ...opts.ports, ...(opts.proxyPort !== undefined ? { proxy: opts.proxyPort } : {}) };
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const ports = await Postfix.ports(fixed);
      const pf = new Postfix(ports, opts);
      running.add(pf);
      try {
        await pf.boot();
        return pf;
      } catch (e) {
        lastError = e;
        await pf.stop();
        // Only a port we chose ourselves can be re-picked; a clash on a fixed port is final.
        const clash = Number(/fatal: bind 127\.0\.0\.1 port (\d+): Address already in use/.exec(String(e))?.[1]);
        const picked = Object.entries(ports).some(([k, p]) => p === clash && fixed[k as keyof PostfixPorts] === undefined);
        if (!picked) break;
      }
    }
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }

  private async boot(): Promise<void> {
    const postfixUid = lookupId('/etc/passwd', 'postfix') ?? -1;
    const postdropGid = lookupId('/etc/group', 'postdrop') ?? -1;
    for (const d of [this.configDir, join(this.dir, 'mail')]) mkdirSync(d, { recursive: true });
    // The queue and data directories as post-install `create-missing` makes them from
    // postfix-files (written below, so `postfix check` and `set-permissions` agree; they cost
    // ~0.3 s of shell and postconf runs, this is instant).
    for (const [path, uid, gid, mode] of [
      [this.queueDir, 0, 0, 0o755],
      [this.dataDir, postfixUid, 0, 0o700],
      ...QUEUE_SUBDIRS.map(([name, mode]) => [join(this.queueDir, name), name === 'pid' ? 0 : postfixUid, name === 'maildrop' || name === 'public' ? postdropGid : 0, mode] as const),
    ] as const) {
      mkdirSync(path, { recursive: true });
      chownSync(path, uid, gid);
      chmodSync(path, mode);
    }
    // virtual(8) delivers as nobody (virtual_uid_maps below).
    for (const sub of ['tmp', 'new', 'cur']) mkdirSync(join(this.maildir, sub), { recursive: true });
    for (const p of [join(this.dir, 'mail'), this.maildir, ...['tmp', 'new', 'cur'].map((s) => join(this.maildir, s))]) {
      chownSync(p, 65534, 65534);
    }
    // postlogd writes the log; postqueue/postsuper open it themselves while Postfix is
    // stopped, so it must exist and be the mail owner's (spec §2).
    writeFileSync(this.logFile, '');
    chownSync(this.logFile, postfixUid, -1);
    this.writeConfig();
    // The queue is brand new, so the integrity checks `postfix start` would run first
    // (post-install, postsuper and a `find` over the queue: seconds) have nothing to find;
    // quick-start makes postfix-script skip them this once.
    writeFileSync(join(this.queueDir, 'quick-start'), '');
    const r = await this.postfix(['start'], 20_000);
    if (r.status !== 0) throw new Error(`postfix start failed (${r.status}):\n${r.stdout}${r.stderr}\n${this.log()}`);
    const pidText = readFileSync(this.pidFile, 'utf8').trim();
    this.masterPid = Number(pidText);
    if (!Number.isInteger(this.masterPid) || this.masterPid <= 1) throw new Error(`bad master.pid ${JSON.stringify(pidText)}`);
  }

  /** main.cf, master.cf, the access tables and a meta_directory of our own. */
  private writeConfig(): void {
    const etc = this.configDir;
    this.writeTables();
    // meta_directory: `postfix check`/`set-permissions` (post-install) read postfix-files there;
    // ours lists just what this instance has, so nothing comes from /etc/postfix.
    writeFileSync(join(etc, 'dynamicmaps.cf'), '# only built-in table types are used\n');
    writeFileSync(join(etc, 'postfix-files'), POSTFIX_FILES);
    const main: Record<string, string> = {
      compatibility_level: '3.6',
      config_directory: etc,
      meta_directory: etc,
      queue_directory: this.queueDir,
      data_directory: this.dataDir,
      mail_owner: 'postfix',
      setgid_group: 'postdrop',
      myhostname: this.myhostname,
      mydomain: DOMAIN,
      myorigin: '$mydomain',
      syslog_name: `postfix-${this.name}`,
      maillog_file: this.logFile,
      maillog_file_prefixes: this.dir,
      mydestination: '',
      local_recipient_maps: '',
      local_transport: 'error:5.1.1 local delivery is disabled in the e2e setup',
      alias_maps: '',
      alias_database: '',
      relayhost: '',
      inet_interfaces: '127.0.0.1',
      inet_protocols: 'ipv4',
      mynetworks: '127.0.0.0/8',
      smtp_dns_support_level: 'disabled',
      biff: 'no',
      virtual_mailbox_domains: DOMAIN,
      virtual_mailbox_base: join(this.dir, 'mail'),
      // virtual(8) forbids $1 in regexp tables, so one catch-all Maildir; mailbox() picks by
      // the Delivered-To: header.
      virtual_mailbox_maps: `inline:{ @${DOMAIN}=all/ }`,
      virtual_uid_maps: 'static:65534',
      virtual_gid_maps: 'static:65534',
      ...RETRY[this.opts.retry ?? 'on-flush'],
      // The reinjection smtpd's own refusals (texthash: no postmap needed).
      e2e_reinject_rcpt_restrictions: `check_recipient_access texthash:${join(etc, 'downstream-rcpt')}, permit_mynetworks, reject`,
      e2e_reinject_eod_restrictions: `check_sender_access texthash:${join(etc, 'downstream-sender')}`,
      ...this.opts.main,
    };
    writeFileSync(join(etc, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}\n`).join(''));
    writeFileSync(join(etc, 'master.cf'), this.masterCf());
    backdate(etc);
  }

  private writeTables(): void {
    const table = (entries: Record<string, string>): string =>
      Object.entries(entries)
        .map(([k, v]) => `${k} ${v}\n`)
        .join('');
    writeFileSync(join(this.configDir, 'downstream-rcpt'), table({ [REFUSED_RCPT]: REFUSED_RCPT_REPLY, ...this.opts.refuseRecipients }));
    writeFileSync(join(this.configDir, 'downstream-sender'), table(this.opts.refuseSenders ?? {}));
  }

  /**
   * Replaces the reinjection smtpd's refusal tables (REFUSED_RCPT stays) and reloads; the
   * smtpd processes started after the reload use them (a reload also restarts scache, so the
   * scan transport does not reuse a session that ends in an old smtpd).
   */
  async setRefusals(refusals: { recipients?: Record<string, string>; senders?: Record<string, string> }): Promise<void> {
    this.opts = { ...this.opts, refuseRecipients: refusals.recipients ?? {}, refuseSenders: refusals.senders ?? {} };
    this.writeTables();
    backdate(this.configDir);
    await this.reload();
  }

  private masterCf(): string {
    const { entryAfterQueue, entryBeforeQueue, reinject, proxy } = this.ports;
    const scanMaxproc = this.opts.scanMaxproc ?? 10;
    return `# service type private unpriv chroot wakeup maxproc command
# A: after-queue entry point (FILTER_README, "advanced" content filter)
127.0.0.1:${entryAfterQueue} inet n - n - - smtpd
  -o content_filter=scan:[127.0.0.1]:${proxy}
  -o receive_override_options=no_address_mappings
  -o smtpd_authorized_xclient_hosts=127.0.0.0/8
scan unix - - n - ${scanMaxproc} smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
  -o smtp_connection_cache_destinations=[127.0.0.1]:${proxy}
# The after-filter (reinjection) smtpd, shared by A and B: smtpsiftd's OutAddress
127.0.0.1:${reinject} inet n - n - - smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=$e2e_reinject_rcpt_restrictions
  -o smtpd_end_of_data_restrictions=$e2e_reinject_eod_restrictions
  -o smtpd_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
# B: before-queue entry point (SMTPD_PROXY_README)
127.0.0.1:${entryBeforeQueue} inet n - n - 20 smtpd
  -o smtpd_proxy_filter=127.0.0.1:${proxy}
  -o smtpd_client_connection_count_limit=10
  -o smtpd_authorized_xclient_hosts=127.0.0.0/8
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`;
  }

  /** `postfix -c DIR ARGS`. */
  postfix(args: readonly string[], timeoutMs = 10_000): Promise<RunResult> {
    return this.exec(POSTFIX, ['-c', this.configDir, ...args], timeoutMs);
  }

  /** `postqueue -c DIR ARGS`. */
  postqueue(args: readonly string[], timeoutMs = 10_000): Promise<RunResult> {
    return this.exec(POSTQUEUE, ['-c', this.configDir, ...args], timeoutMs);
  }

  /** `postconf -c DIR ARGS` (e.g. `['-h', 'queue_directory']`). */
  postconf(args: readonly string[], timeoutMs = 10_000): Promise<RunResult> {
    return this.exec(POSTCONF, ['-c', this.configDir, ...args], timeoutMs);
  }

  /**
   * Runs a Postfix command to its exit. Its output goes to files, not pipes, and the wait is
   * for the command's exit, so it never depends on the daemons `postfix start` leaves behind
   * with whatever descriptors they inherited.
   */
  private async exec(cmd: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
    const base = join(this.dir, `cmd-${++this.commands}`);
    const out = openSync(`${base}.out`, 'w');
    const err = openSync(`${base}.err`, 'w');
    try {
      const proc = spawn(cmd, args, { stdio: ['ignore', out, err] });
      this.inFlight.add(proc);
      proc.on('exit', () => this.inFlight.delete(proc));
      const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`${cmd} ${args.join(' ')} did not exit in ${timeoutMs} ms`));
        }, timeoutMs);
        proc.on('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
        proc.on('exit', (code, sig) => {
          clearTimeout(timer);
          resolve([code, sig]);
        });
      });
      return { status, signal, stdout: readFileSync(`${base}.out`, 'utf8'), stderr: readFileSync(`${base}.err`, 'utf8') };
    } finally {
      closeSync(out);
      closeSync(err);
      rmSync(`${base}.out`, { force: true });
      rmSync(`${base}.err`, { force: true });
    }
  }

  /**
   * Points the content filter and the proxy filter at another port (smtpsiftd restarted on
   * a new one) and reloads. Processes already running finish their current session first.
   */
  async setProxyPort(port: number): Promise<void> {
    this.currentPorts = { ...this.currentPorts, proxy: port };
    writeFileSync(join(this.configDir, 'master.cf'), this.masterCf());
    backdate(this.configDir);
    await this.reload();
  }

  /** `postfix reload`: re-reads main.cf/master.cf (and the access tables, in new processes). */
  async reload(): Promise<void> {
    const r = await this.postfix(['reload']);
    if (r.status !== 0) throw new Error(`postfix reload failed (${r.status}): ${r.stderr}`);
  }

  /** `postqueue -f`: every queued message, deferred ones included, is tried again now. */
  async flush(): Promise<void> {
    const r = await this.postqueue(['-f']);
    if (r.status !== 0) throw new Error(`postqueue -f failed (${r.status}): ${r.stderr}`);
  }

  /** What is in the queue (`postqueue -j`); deferred messages carry a delay_reason per recipient. */
  async queue(): Promise<QueuedMessage[]> {
    const r = await this.postqueue(['-j']);
    if (r.status !== 0) throw new Error(`postqueue -j failed (${r.status}): ${r.stderr}`);
    return r.stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as QueuedMessage);
  }

  /** Waits until nothing is queued (every message delivered, bounced or dropped). */
  async waitForEmptyQueue(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let q: QueuedMessage[] = [];
    while (Date.now() < deadline) {
      q = await this.queue();
      if (q.length === 0) return;
      await sleep(100);
    }
    throw new Error(`queue not empty after ${timeoutMs} ms:\n${JSON.stringify(q, null, 1)}\n--- postfix log (tail):\n${this.logTail()}`);
  }

  /** Waits until a deferred message shows up; resolves the deferred queue. */
  async waitForDeferred(n = 1, timeoutMs = 10_000): Promise<QueuedMessage[]> {
    const deadline = Date.now() + timeoutMs;
    let deferred: QueuedMessage[] = [];
    while (Date.now() < deadline) {
      deferred = (await this.queue()).filter((m) => m.queue_name === 'deferred');
      if (deferred.length >= n) return deferred;
      await sleep(100);
    }
    throw new Error(`${deferred.length} of ${n} deferred after ${timeoutMs} ms\n--- postfix log (tail):\n${this.logTail()}`);
  }

  /** Every delivered message, in delivery order. */
  delivered(): Delivered[] {
    const out: Array<Delivered & { order: string }> = [];
    for (const sub of ['new', 'cur']) {
      const d = join(this.maildir, sub);
      if (!existsSync(d)) continue;
      for (const f of readdirSync(d)) {
        const file = join(d, f);
        const content = readFileSync(file, 'latin1');
        // virtual(8) puts Return-Path: and then Delivered-To: on top of what it delivers.
        const header = content.slice(0, Math.max(0, content.indexOf('\n\n')) || content.length);
        const to = /^Delivered-To: *(.*)$/im.exec(header)?.[1]?.trim().toLowerCase() ?? '';
        // Maildir names start with the delivery time: `seconds.Vdev Iinode Mmicroseconds.host`.
        const m = /^(\d+)\..*M(\d+)/.exec(f);
        out.push({ file, to, content, order: m ? `${m[1]?.padStart(12, '0')}.${m[2]?.padStart(6, '0')}` : f });
      }
    }
    return out.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0)).map(({ file, to, content }) => ({ file, to, content }));
  }

  /** The messages delivered to `addr` (file contents, LF line ends, Delivered-To: on top). */
  mailbox(addr: string): string[] {
    const want = addr.toLowerCase();
    return this.delivered()
      .filter((m) => m.to === want)
      .map((m) => m.content);
  }

  /** Waits until `addr` has at least `n` messages; resolves all of them. */
  async waitForMail(addr: string, n = 1, timeoutMs = 10_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const box = this.mailbox(addr);
      if (box.length >= n) return box;
      if (Date.now() > deadline) {
        throw new Error(`${addr}: ${box.length} of ${n} messages after ${timeoutMs} ms\n--- postfix log (tail):\n${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  /** Everything Postfix logged so far. */
  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** The last `lines` lines of the log, for failure messages. */
  logTail(lines = 40): string {
    return this.log().split('\n').slice(-lines - 1).join('\n');
  }

  /** Waits until the log matches; resolves the match. */
  async waitForLog(re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.log());
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`postfix log never matched ${re} in ${timeoutMs} ms:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  /**
   * Stops the instance and removes its directory. `postfix stop` first; whatever is still in
   * the master's session after 5 s is killed with SIGKILL. Idempotent.
   */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      if (this.masterPid > 0 || existsSync(this.pidFile)) {
        await this.postfix(['stop']).catch(() => undefined);
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline && this.masters().some((pid) => processesInSession(pid).length > 0)) await sleep(50);
        this.killNow();
      }
      running.delete(this);
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.stopped;
  }

  private get pidFile(): string {
    return join(this.queueDir, 'pid', 'master.pid');
  }

  /** The master we started, and whatever master.pid names now (someone may have restarted it). */
  private masters(): number[] {
    const pids = new Set<number>();
    if (this.masterPid > 0) pids.add(this.masterPid);
    try {
      const p = Number(readFileSync(this.pidFile, 'utf8').trim());
      if (Number.isInteger(p) && p > 1) pids.add(p);
    } catch {
      // no pid file: not running
    }
    return [...pids];
  }

  /** At exit without stop(): kill synchronously and remove the directory. */
  abandon(): void {
    for (const p of this.inFlight) p.kill('SIGKILL');
    this.killNow();
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous last resort: SIGKILL to everything in the master's session. */
  killNow(): void {
    for (const master of this.masters()) {
      for (const p of processesInSession(master)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    this.masterPid = 0;
  }
}

/**
 * smtpsiftd between a fresh Postfix's two halves: the daemon listens on a port of its own
 * choosing, relays to the reinjection smtpd, and Postfix is told the daemon's port.
 */
export interface PostfixRelay {
  readonly pf: Postfix;
  readonly d: Daemon;
  /** Stops both (Postfix first, so nothing new reaches the daemon), removes both directories. */
  stop(): Promise<void>;
}

export async function startPostfixRelay(
  opts: {
    /** Config lines; a function gets the chosen ports (e.g. to write a route file naming them). */
    daemon?: Record<string, string> | ((ports: PostfixPorts) => Record<string, string>);
    daemonArgs?: string[];
    daemonStart?: StartOptions;
    postfix?: PostfixOptions;
  } = {},
): Promise<PostfixRelay> {
  const ports = await Postfix.ports(opts.postfix?.ports);
  const extra = typeof opts.daemon === 'function' ? opts.daemon(ports) : opts.daemon;
  // Routed mode (issue 5) chooses upstreams per recipient domain: OutAddress would be an error.
  const out: Record<string, string> = extra?.['RouteType'] !== undefined ? {} : { OutAddress: `127.0.0.1:${ports.reinject}` };
  const d = await startDaemon(
    { ...out, MaxConnections: '64', ...extra },
    opts.daemonArgs,
    opts.daemonStart,
  );
  let pf: Postfix;
  try {
    pf = await Postfix.start({ ...opts.postfix, ports: { ...ports, proxy: d.port } });
  } catch (e) {
    await d.stop();
    throw e;
  }
  return {
    pf,
    d,
    async stop() {
      await pf.stop();
      await d.stop();
    },
  };
}

/**
 * The live Postfix daemons (programs in daemon_directory) whose session is `sid`: a master
 * and its children. The program check keeps a recycled PID from naming someone else.
 */
export function processesInSession(sid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[3]) !== sid || fields[0] === 'Z') continue;
      if (readlinkSync(`/proc/${name}/exe`).startsWith(`${DAEMON_DIRECTORY}/`)) out.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** The numeric id of `name` in /etc/passwd or /etc/group. */
function lookupId(file: string, name: string): number | undefined {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined) return Number(f[2]);
    }
  } catch {
    // no such file
  }
  return undefined;
}

/**
 * Sets the mtime of every file in `dir` a minute back. Postfix will not read a config file
 * modified within the last second or so ("still being written", mail_conf_read): it polls
 * every 300 ms until the file is old enough, which costs a fresh instance ~2 s per start.
 */
function backdate(dir: string): void {
  const past = new Date(Date.now() - 60_000);
  for (const f of readdirSync(dir)) utimesSync(join(dir, f), past, past);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const RETRY: Record<'on-flush' | 'fast', Record<string, string>> = {
  'on-flush': { queue_run_delay: '3600s', minimal_backoff_time: '3600s', maximal_backoff_time: '3600s' },
  fast: { queue_run_delay: '1s', minimal_backoff_time: '1s', maximal_backoff_time: '2s' },
};

/** The queue's subdirectories and their modes (owner: mail_owner; pid: root). */
const QUEUE_SUBDIRS: ReadonlyArray<readonly [string, number]> = [
  ['active', 0o700],
  ['bounce', 0o700],
  ['corrupt', 0o700],
  ['defer', 0o700],
  ['deferred', 0o700],
  ['flush', 0o700],
  ['hold', 0o700],
  ['incoming', 0o700],
  ['private', 0o700],
  ['maildrop', 0o730],
  ['public', 0o710],
  ['pid', 0o755],
  ['saved', 0o700],
  ['trace', 0o700],
];

// The subset of Debian's postfix-files that `post-install create-missing` needs to build the
// queue (format: path:type:owner:group:mode:flags; see post-install(1)).
const POSTFIX_FILES = `$config_directory:d:root:-:755:u
$data_directory:d:$mail_owner:-:700:uc
$queue_directory:d:root:-:755:uc
$queue_directory/active:d:$mail_owner:-:700:ucr
$queue_directory/bounce:d:$mail_owner:-:700:ucr
$queue_directory/corrupt:d:$mail_owner:-:700:ucr
$queue_directory/defer:d:$mail_owner:-:700:ucr
$queue_directory/deferred:d:$mail_owner:-:700:ucr
$queue_directory/flush:d:$mail_owner:-:700:ucr
$queue_directory/hold:d:$mail_owner:-:700:ucr
$queue_directory/incoming:d:$mail_owner:-:700:ucr
$queue_directory/private:d:$mail_owner:-:700:uc
$queue_directory/maildrop:d:$mail_owner:$setgid_group:730:uc
$queue_directory/public:d:$mail_owner:$setgid_group:710:uc
$queue_directory/pid:d:root:-:755:uc
$queue_directory/saved:d:$mail_owner:-:700:ucr
$queue_directory/trace:d:$mail_owner:-:700:ucr
$config_directory/main.cf:f:root:-:644:p
$config_directory/master.cf:f:root:-:644:p
`;

// A private network of network namespaces for the transparent-proxy suite (issue 4;
// spec/netns-transparent.md "Topology"): a client, a gateway running smtpsiftd, a server
// and a second client, joined by veth pairs made from inside the gateway, so that nothing
// is ever added to the root namespace. Teardown kills what the suite started, one PID at a
// time, then deletes the namespaces (which takes their veths, rules and routes with them).
//
//   client  10.200.1.2 [eth0] --- [to-client ] 10.200.1.1 \
//   server  10.200.2.2 [eth0] --- [to-server ] 10.200.2.1  > gw  (ip_forward=1)
//   client2 10.200.3.2 [eth0] --- [to-client2] 10.200.3.1 /

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from './process.js';

export type Host = 'client' | 'gw' | 'server' | 'client2';

export const ADDR = {
  client: '10.200.1.2',
  server: '10.200.2.2',
  client2: '10.200.3.2',
  gwClient: '10.200.1.1',
  gwServer: '10.200.2.1',
  gwClient2: '10.200.3.1',
} as const;

/** Every address of the gateway: "the gateway's address" as the server may see it. */
export const GW_ADDRESSES: readonly string[] = [ADDR.gwClient, ADDR.gwServer, ADDR.gwClient2];

const AGENT = fileURLToPath(new URL('./netns-agent.js', import.meta.url));

/** What a recorder printed: a connection or a message. */
export interface RecordEvent {
  readonly event: 'connect' | 'message' | 'ready';
  readonly peer?: string;
  readonly helo?: string;
  readonly from?: string;
  readonly rcpts?: string[];
  readonly data?: string;
}

export interface Recorder {
  readonly name: string;
  readonly events: RecordEvent[];
  /** Messages whose data contains `token`. */
  messages(token: string): RecordEvent[];
}

export interface SendResult {
  readonly greeting?: string;
  readonly replies?: string[];
  readonly final?: string;
  readonly error?: string;
}

export class Netns {
  /** Short, unique per run: `sift<pid>-gw`. */
  readonly prefix = `sift${process.pid}`;
  private readonly made: string[] = [];
  private readonly procs: ChildProcess[] = [];

  ns(h: Host): string {
    return `${this.prefix}-${h}`;
  }

  /** A command inside a namespace, to its exit; throws on a non-zero status. */
  async exec(h: Host, argv: readonly string[], timeoutMs = 10_000): Promise<RunResult> {
    const r = await run('ip', ['netns', 'exec', this.ns(h), ...argv], timeoutMs);
    if (r.status !== 0) throw new Error(`in ${h}: ${argv.join(' ')}: status ${r.status}\n${r.stderr}`);
    return r;
  }

  private async ip(args: readonly string[]): Promise<void> {
    const r = await run('ip', args);
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: status ${r.status}\n${r.stderr}`);
  }

  /** Builds the topology; on any failure the caller's teardown removes what was made. */
  async setup(): Promise<void> {
    for (const h of ['gw', 'client', 'server', 'client2'] as const) {
      await this.ip(['netns', 'add', this.ns(h)]);
      this.made.push(this.ns(h));
      await this.ip(['-n', this.ns(h), 'link', 'set', 'lo', 'up']);
      // rp_filter off everywhere, as in the spec (per-netns sysctls).
      await this.exec(h, ['sh', '-c', 'for f in /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/conf/default/rp_filter; do echo 0 > $f; done']);
    }
    await this.exec('gw', ['sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
    const links: Array<[Host, string, string, string]> = [
      ['client', 'to-client', ADDR.gwClient, ADDR.client],
      ['server', 'to-server', ADDR.gwServer, ADDR.server],
      ['client2', 'to-client2', ADDR.gwClient2, ADDR.client2],
    ];
    for (const [h, gwIf, gwIp, hostIp] of links) {
      // Made from inside gw, the peer straight into the host: never in the root namespace.
      await this.ip(['-n', this.ns('gw'), 'link', 'add', gwIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.ns(h)]);
      await this.ip(['-n', this.ns('gw'), 'addr', 'add', `${gwIp}/24`, 'dev', gwIf]);
      await this.ip(['-n', this.ns('gw'), 'link', 'set', gwIf, 'up']);
      await this.ip(['-n', this.ns(h), 'addr', 'add', `${hostIp}/24`, 'dev', 'eth0']);
      await this.ip(['-n', this.ns(h), 'link', 'set', 'eth0', 'up']);
      await this.ip(['-n', this.ns(h), 'route', 'add', 'default', 'via', gwIp]);
    }
  }

  /** Starts a long-running process inside a namespace (killed by PID at teardown). */
  spawn(h: Host, argv: readonly string[]): ChildProcess {
    // `ip netns exec` execs the command itself: the child's PID is the program's.
    const p = spawn('ip', ['netns', 'exec', this.ns(h), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.push(p);
    return p;
  }

  /** A recorder (netns-agent.js recorder) on host:port; resolves once it listens. */
  async recorder(name: string, h: Host, host: string, port: number): Promise<Recorder> {
    const p = this.spawn(h, [process.execPath, AGENT, 'recorder', host, String(port)]);
    const events: RecordEvent[] = [];
    let buf = '';
    let stderr = '';
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`recorder ${name} did not start: ${stderr}`)), 10_000);
      p.on('exit', (code) => reject(new Error(`recorder ${name} exited with ${code}: ${stderr}`)));
      p.stdout?.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const e = JSON.parse(buf.slice(0, nl)) as RecordEvent;
          buf = buf.slice(nl + 1);
          if (e.event === 'ready') {
            clearTimeout(timer);
            resolve();
          } else events.push(e);
        }
      });
    });
    await ready;
    return { name, events, messages: (token) => events.filter((e) => e.event === 'message' && (e.data ?? '').includes(token)) };
  }

  /** One SMTP session from a host (netns-agent.js send). */
  async send(h: Host, host: string, port: number, m: { helo: string; from: string; to: string[]; body: string }): Promise<SendResult> {
    const r = await this.exec(h, [process.execPath, AGENT, 'send', host, String(port), JSON.stringify(m)], 30_000);
    return JSON.parse(r.stdout.trim()) as SendResult;
  }

  /** The daemon's argv run inside gw (for startDaemon's `wrap`). */
  wrap(h: Host): (argv: string[]) => string[] {
    return (argv) => ['ip', 'netns', 'exec', this.ns(h), ...argv];
  }

  /**
   * Always safe to call, also after a failed setup: kills the processes this suite started
   * (then any other still in its namespaces, which it also started), one PID at a time,
   * then deletes only the namespaces it made.
   */
  async teardown(): Promise<void> {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
        p.kill('SIGTERM');
        await Promise.race([new Promise((r) => p.once('exit', r)), new Promise((r) => setTimeout(r, 2000))]);
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      }
    }
    for (const name of this.made) {
      const pids = await run('ip', ['netns', 'pids', name]).catch(() => undefined);
      for (const pid of (pids?.stdout ?? '').split(/\s+/).filter(Boolean).map(Number).slice(0, 100)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    for (const name of this.made.splice(0).reverse()) await run('ip', ['netns', 'del', name]).catch(() => undefined);
  }
}

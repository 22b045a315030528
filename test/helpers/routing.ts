// Routed (Moxy) mode under test (issue 5): three recording upstreams, a route file in a
// private directory, and the real smtpsiftd in RouteType mode, all cleaned up in one place.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RawClient } from './client.js';
import { SMTPSIFT, startDaemon, tempDir, type Daemon } from './daemon.js';
import { RecordingUpstream, type UpstreamOptions } from './upstream.js';

export interface Routed {
  readonly ups: RecordingUpstream[];
  readonly d: Daemon;
  /** The private directory of the route file/database. */
  readonly dir: string;
  readonly routeFile: string;
  /** `127.0.0.1:port` of upstream i. */
  at(i: number): string;
  /** Rewrites the route file (`{ups}` placeholders already expanded by the caller). */
  writeRoutes(text: string): void;
  /** Connected, greeted and past EHLO (unless helo is null). */
  session(helo?: string | null, host?: string): Promise<RawClient>;
}

export interface RoutedOptions {
  upstreams?: UpstreamOptions[];
  /** The route file's text, from the upstreams' addresses. */
  routes?: (at: (i: number) => string) => string;
  /** Config lines; RouteType file and RouteDatabase (the route file) unless given. */
  config?: (at: (i: number) => string, dir: string) => Record<string, string>;
  /** Run before the daemon starts (e.g. makedb). */
  before?: (r: { dir: string; routeFile: string; at: (i: number) => string }) => void;
}

export async function withRouted(opts: RoutedOptions, fn: (r: Routed) => Promise<void>): Promise<void> {
  const specs = opts.upstreams ?? [{}, {}, {}];
  const ups: RecordingUpstream[] = [];
  const clients: RawClient[] = [];
  const tmp = tempDir('smtpsift-routes-');
  let d: Daemon | undefined;
  try {
    for (const spec of specs) ups.push(await RecordingUpstream.start(spec));
    const at = (i: number): string => `127.0.0.1:${ups[i]?.port ?? 0}`;
    const routeFile = join(tmp.dir, 'routes');
    writeFileSync(routeFile, opts.routes?.(at) ?? '');
    opts.before?.({ dir: tmp.dir, routeFile, at });
    const config = opts.config?.(at, tmp.dir) ?? { RouteType: 'file', RouteDatabase: routeFile };
    d = await startDaemon(config);
    const daemon = d;
    await fn({
      ups,
      d: daemon,
      dir: tmp.dir,
      routeFile,
      at,
      writeRoutes: (text) => writeFileSync(routeFile, text),
      async session(helo = 'EHLO client.test', host = '127.0.0.1') {
        const c = await RawClient.connect(daemon.port, host);
        clients.push(c);
        return c.greet(helo);
      },
    });
  } finally {
    for (const c of clients) c.close();
    await d?.stop();
    for (const u of ups) await u.close();
    tmp.remove();
  }
}

/** Runs `smtpsift args...`; returns its status and output. */
export function smtpsift(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SMTPSIFT, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A port nobody listens on (bound, then closed). */
export async function deadPort(): Promise<number> {
  const u = await RecordingUpstream.start();
  const port = u.port;
  await u.close();
  return port;
}

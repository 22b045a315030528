// The native addon (native/smtpsift.c, built by node-gyp at `npm ci`): the system calls
// Node.js does not offer.

import { createRequire } from 'node:module';

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** How a relayData ended (native/pump.c says more). */
export interface RelayResult {
  /** done: the end of data was read (and written, unless upstreamError); eof, error: the client is gone; timeout: it fell silent. */
  readonly status: 'done' | 'eof' | 'timeout' | 'error' | 'cancelled';
  /** Why writing to the upstream failed ("timeout" or the system's text); the data was still read to its end. */
  readonly upstreamError?: string;
  /** Message bytes received by the thread, unstuffed. */
  readonly size: number;
  /** Of those, the bytes the upstream stores: unstuffed, CRLF endings. */
  readonly contentBytes: number;
  /** What the client sent after its end of data. */
  readonly leftover: Buffer;
}

declare const relayBrand: unique symbol;
export type RelayHandle = { readonly [relayBrand]: true };

/** Thrown by the addon: `code` is the errno name (`EPERM`), the message says which call failed. */
export type NativeError = Error & { readonly code?: string };

interface Addon {
  /** Marks every descriptor >= fd close-on-exec. */
  cloexecFrom(fd: number): void;
  /** SO_ORIGINAL_DST (IPv4, v4-mapped) or IP6T_SO_ORIGINAL_DST (IPv6) of an accepted socket. */
  originalDst(fd: number): SocketAddress;
  /** A listening socket with IP_TRANSPARENT (for TPROXY rules); close-on-exec. */
  transparentListen(host: string, port: number, backlog: number): number;
  /**
   * A socket bound to `source` with IP_TRANSPARENT, connected to host:port without
   * blocking; `cb` gets the connected fd (close-on-exec) or the error.
   */
  transparentConnect(source: string, host: string, port: number, timeoutMs: number, cb: (err: NativeError | null, fd?: number) => void): void;
  /** prctl(PR_SET_KEEPCAPS): keep the permitted capabilities across setuid. */
  keepCaps(on: boolean): void;
  /** Exactly these capabilities, effective and permitted; none inheritable or ambient. */
  limitCaps(caps: readonly number[]): void;
  /** SMTP dot-stuffing and CRLF endings (native/dot.c): returns the bytes written to `output`. */
  dotEncode(input: Buffer, output: Buffer, state: Int32Array): number;
  /** Buffer.indexOf('\r\n.', from), without stopping at every CR (native/dot.c). */
  findCrlfDot(input: Buffer, from: number): number;
  /**
   * CutThrough's DATA body on a thread of the addon's (native/pump.c): the rest of the
   * client's data, from `initial` on, read from clientFd, stuffed with CRLF endings and
   * written to upstreamFd up to its end of data, going on from a DotDecoder's position and
   * a DotEncoder's flags; onDone tells how it ended. Both sockets are the thread's until
   * then (the caller neither reads the client nor writes either).
   */
  relayData(
    clientFd: number,
    upstreamFd: number,
    initial: Buffer,
    timeoutMs: number,
    decoderPosition: number,
    encoderFlags: number,
    onDone: (r: RelayResult) => void,
  ): RelayHandle;
  /** Stops a relay before its end of data goes upstream; onDone still comes ("cancelled"). Only before onDone. */
  cancelRelay(handle: RelayHandle): void;
  /** getrlimit(RLIMIT_NOFILE); RLIM_INFINITY is Infinity. */
  getNofile(): FileLimit;
  /** setrlimit(RLIMIT_NOFILE); raising `hard` needs CAP_SYS_RESOURCE (EPERM otherwise). */
  setNofile(soft: number, hard: number): void;
  /**
   * `/bin/sh -c command` by posix_spawn (native/spawn.c): its own process group, default
   * signals, stdin/stdout on the descriptors (-1: /dev/null), stderr on a new pipe whose read
   * end is returned; onExit gets the exit code, or null and the signal number.
   */
  spawnFilter(
    command: Buffer,
    env: readonly Buffer[],
    stdinFd: number,
    stdoutFd: number,
    onExit: (code: number | null, signal: number | null) => void,
  ): { readonly pid: number; readonly stderr: number };
  /**
   * getaddrinfo(3), synchronously: the IP addresses of a host name, in its order. Throws an
   * Error whose code is the EAI_ name (EAI_NONAME, EAI_AGAIN, ...) and message gai_strerror.
   */
  resolveHost(name: string): string[];
  /** malloc_trim(0): glibc gives back the free pages inside its heaps. */
  trimMemory(): void;
  /** A new zeroed page of counters shared across processes (native/cells.c); `fd` is close-on-exec. */
  cellsCreate(): { readonly fd: number; readonly cells: ArrayBuffer };
  /** The page of counters behind a descriptor from cellsCreate (a worker process's). */
  cellsAttach(fd: number): ArrayBuffer;
  cellsLoad(cells: ArrayBuffer, index: number): number;
  cellsStore(cells: ArrayBuffer, index: number, value: number): void;
  /** Atomic add; returns the value before. */
  cellsAdd(cells: ArrayBuffer, index: number, delta: number): number;
  /** Atomic compare-and-swap; returns the value before (swapped when it was `expected`). */
  cellsCas(cells: ArrayBuffer, index: number, expected: number, desired: number): number;
}

/** An RLIMIT_NOFILE pair. */
export interface FileLimit {
  readonly soft: number;
  readonly hard: number;
}

const require = createRequire(import.meta.url);
// dist/src/native.js -> build/Release at the package root.
export const native = require('../../build/Release/smtpsift.node') as Addon;

/** <linux/capability.h> */
export const CAP_NET_ADMIN = 12;

/** transparentConnect as a promise. */
export function transparentConnect(source: string, host: string, port: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    native.transparentConnect(source, host, port, timeoutMs, (err, fd) => {
      if (err !== null || fd === undefined) reject(err ?? new Error('connect failed'));
      else resolve(fd);
    });
  });
}

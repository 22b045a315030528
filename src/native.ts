// The native addon (native/smtpsift.c, built by node-gyp at `npm ci`): the system calls
// Node.js does not offer.

import { createRequire } from 'node:module';

interface Addon {
  /** Marks every descriptor >= fd close-on-exec. */
  cloexecFrom(fd: number): void;
}

const require = createRequire(import.meta.url);
// dist/src/native.js -> build/Release at the package root.
export const native = require('../../build/Release/smtpsift.node') as Addon;

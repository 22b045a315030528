import { isIP } from 'node:net';

/** A socket's IP in plain form: `::ffff:127.0.0.1` is `127.0.0.1`. */
export function plainIp(address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined;
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

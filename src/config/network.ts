// Where the daemon listens and whom it believes: the bind address's checks,
// the URL printed once listening, and --trust-proxy.
import { isIP } from 'node:net';
import { ConfigError } from './config-error.js';

/** 127.0.0.1, localhost, ::1 and [::1], in any letter case. */
export function isLoopbackHost(hostname: string): boolean {
  const lower = hostname.toLowerCase();
  return lower === '127.0.0.1' || lower === 'localhost' || lower === '::1' || lower === '[::1]';
}

/**
 * The URL printed once listening. The hostname stays as typed; a raw IPv6
 * literal gets brackets and its zone `%` escaped (RFC 6874). Bracketed input
 * is left alone.
 */
export function formatListenUrl(hostname: string, port: number): string {
  let host = hostname;
  if (!hostname.startsWith('[') && hostname.includes(':')) {
    host = `[${hostname.replaceAll('%', '%25')}]`;
  }
  return `http://${host}:${port}`;
}

/** Refuses `host:port` typed into --hostname. Raw IPv6 has two colons or more. */
export function assertNoPortInHostname(hostname: string): void {
  if (!hostname.startsWith('[') && hostname.split(':').length === 2) {
    throw new ConfigError(
      `Invalid --hostname "${hostname}": looks like a "host:port" combination. Use --port for the port, e.g. "--hostname <host> --port <port>".`,
    );
  }
}

/**
 * The address to hand to `listen()`: the hostname without its IPv6
 * brackets. Brackets mean exactly `[addr]`: no port after them, nothing
 * empty inside (an empty host would bind every interface).
 */
export function listenHostFor(hostname: string): string {
  if (!hostname.startsWith('[')) return hostname;
  const inner = hostname.slice(1, -1);
  if (!hostname.endsWith(']') || inner.length === 0 || inner.includes(']') || inner.includes('[')) {
    throw new ConfigError(
      `Invalid --hostname "${hostname}": brackets indicate an IPv6 literal but the value isn't a clean [addr] form. ` +
        'Pass the address without a trailing :port (use --port for that), e.g. "--hostname [::1] --port 4170".',
    );
  }
  return inner;
}

/** The address ranges proxy-addr (Fastify's trustProxy) knows by name. */
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** An address, an address/prefix (CIDR), or a named range. */
function isProxyRange(entry: string): boolean {
  if (NAMED_RANGES.has(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * --trust-proxy: "true"/"1" believes any peer, "false"/"0" none (the
 * default), anything else is a list of the proxies' addresses or ranges.
 * Checked here so that a typo is a start-up error in our words rather than
 * proxy-addr's when the app is built.
 */
export function trustedProxies(value: string | undefined, fromFlag: boolean): boolean | string[] {
  const text = value?.trim() ?? '';
  const lower = text.toLowerCase();
  if (lower === 'true' || lower === '1') return true;
  if (lower === 'false' || lower === '0' || lower === '') return false;
  const entries = text.split(',').map((entry) => entry.trim().toLowerCase());
  const bad = entries.find((entry) => !isProxyRange(entry));
  if (bad !== undefined) {
    throw new ConfigError(
      `Invalid --trust-proxy "${value ?? ''}"${fromFlag ? '' : ' (from ACPD_TRUST_PROXY)'}: "${bad}" is not an IP address, ` +
        'a CIDR range or one of loopback, linklocal, uniquelocal. Use true, false, or a comma-separated list such as "127.0.0.1,10.0.0.0/8".',
    );
  }
  return entries;
}

/**
 * --allow-origin: a comma-separated list of origins (`scheme://host[:port]`,
 * http or https, nothing after the host), each kept as a browser serialises
 * it in the `Origin` header (lower-case host, default port left out), so the
 * request's header can be compared with it exactly. Blank entries are
 * skipped; anything else that is not an origin is a start-up error.
 */
export function allowedOrigins(value: string | undefined, fromFlag: boolean): string[] {
  const origins = new Set<string>();
  for (const entry of (value ?? '').split(',').map((part) => part.trim())) {
    if (entry === '') continue;
    const origin = originOf(entry);
    if (origin === undefined) {
      throw new ConfigError(
        `Invalid --allow-origin "${value ?? ''}"${fromFlag ? '' : ' (from ACPD_ALLOW_ORIGIN)'}: "${entry}" is not an origin. ` +
          'Give scheme, host and optional port only, comma-separated, e.g. "https://app.example,http://localhost:3000".',
      );
    }
    origins.add(origin);
  }
  return [...origins];
}

/** The origin `entry` names, or undefined when it is more (a path, a query, credentials) or not http(s). */
function originOf(entry: string): string | undefined {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined;
  if (url.pathname !== '/') return undefined;
  return url.origin;
}

/**
 * Static files as the browser pages acpd serves get them (the web console,
 * routes/console.ts; the API document's viewer, routes/docs.ts): a file of a
 * known type with an ETag from its content, revalidated on every load and
 * answered 304 while unchanged. The console reads its few small files once at
 * start-up; the viewer reads its large ones only when asked, so an idle
 * daemon holds none of them.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
};

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

function extension(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot);
}

/** Whether a file of this name may be served at all: one of a known type (not a map, not a type declaration). */
export function servable(name: string): boolean {
  return CONTENT_TYPES[extension(name)] !== undefined;
}

/** `body` as the file `name` (its type from its extension, which must be servable). */
export function asset(name: string, body: Buffer): Asset {
  const type = CONTENT_TYPES[extension(name)];
  if (type === undefined) throw new Error(`${name}: not a type acpd serves`);
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  return { body, type, etag };
}

/** The servable files of a directory, read now. */
export function readAssets(dir: URL): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    if (servable(name)) assets.set(name, asset(name, readFileSync(new URL(name, dir))));
  }
  return assets;
}

/** One file, read when asked (the caller decides which names may be asked for). */
export async function readAsset(file: string): Promise<Asset> {
  return asset(file, await readFile(file));
}

/**
 * The Content-Security-Policy of a page acpd serves: scripts and styles from
 * this origin only, requests to this origin only, no framing, no forms, no
 * plugins — a page that holds a token should not run anything it did not
 * ship or be clickjacked. `inlineStyles` allows style attributes and
 * elements (Swagger UI renders with them; the console has none).
 */
export function pagePolicy({ inlineStyles }: { inlineStyles: boolean }): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    inlineStyles ? "style-src 'self' 'unsafe-inline'" : "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The answer of a request that matched no file: the app's own 404 envelope (app.ts). */
export function notFound(req: FastifyRequest, reply: FastifyReply) {
  return reply.code(404).send({ error: `Route ${req.method} ${req.url.split('?')[0]} not found` });
}

/**
 * Sends a file, or 404 without one. An HTML page gets the caller's
 * Content-Security-Policy. The names carry no version, so every load
 * revalidates (no-cache) and gets a 304 while the ETag still matches.
 */
export function sendAsset(
  req: FastifyRequest,
  reply: FastifyReply,
  file: Asset | undefined,
  contentSecurityPolicy: string,
) {
  if (file === undefined) return notFound(req, reply);
  reply
    .header('cache-control', 'no-cache')
    .header('etag', file.etag)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer');
  if (file.type.startsWith('text/html')) reply.header('content-security-policy', contentSecurityPolicy);
  if (req.headers['if-none-match'] === file.etag) return reply.code(304).send();
  return reply.type(file.type).send(file.body);
}

/**
 * Request validation glue: the body sanitizer every route reads through, and
 * the formatter that turns ajv's first failing keyword into the contract's
 * exact 400 text (from the schemas' `errorMessage` / `errorCode` annotations).
 */
import type { FastifySchemaValidationError } from 'fastify/types/schema.js';

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** A prototype-free copy of a JSON object body; anything else becomes `{}`. */
export function safeBody(body: unknown): Record<string, unknown> {
  const out = Object.create(null) as Record<string, unknown>;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return out;
  for (const key of Object.keys(body)) {
    if (!FORBIDDEN_KEYS.has(key)) out[key] = (body as Record<string, unknown>)[key];
  }
  return out;
}

interface Annotated {
  errorMessage?: string | Record<string, string>;
  errorCode?: string;
  properties?: Record<string, Annotated>;
}

function annotation(schema: Annotated | undefined, keyword: string): { message: string; code?: string } | undefined {
  const m = schema?.errorMessage;
  if (m === undefined) return undefined;
  const message = typeof m === 'string' ? m : m[keyword];
  return message === undefined ? undefined : { message, code: schema?.errorCode };
}

export function validationMessage(errors: FastifySchemaValidationError[]): { message: string; code?: string } {
  for (const err of errors) {
    const parent = (err as { parentSchema?: Annotated }).parentSchema;
    if (err.keyword === 'required') {
      const missing = (err.params as { missingProperty?: string }).missingProperty;
      const found =
        (missing === undefined ? undefined : annotation(parent?.properties?.[missing], 'required')) ??
        annotation(parent, 'required');
      if (found) return found;
      continue;
    }
    const found = annotation(parent, err.keyword);
    if (found) return found;
  }
  const first = errors[0];
  return { message: first ? `${first.instancePath || 'request'} ${first.message ?? 'is invalid'}` : 'Invalid request' };
}

/**
 * Whether the JSON text nests objects and arrays deeper than `max`. One pass
 * over the text, before it is parsed: a body that only nests deeply costs
 * nothing more than reading it, and never reaches code that walks it
 * recursively (JSON.stringify in the agent link, the serializers, the bus).
 * Brackets inside strings do not count; the text need not be valid JSON
 * (the parser judges that afterwards).
 */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** "10 MB" for whole mebibytes, else bytes: how the 413 text names the limit. */
export function formatByteLimit(bytes: number): string {
  const mib = 1024 * 1024;
  return bytes % mib === 0 ? `${bytes / mib} MB` : `${bytes} bytes`;
}

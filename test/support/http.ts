/** Requests to a listening test daemon over a real socket (undici), answers parsed as JSON when they are. */
import { request } from 'undici';
import type { Endpoint } from './app.js';

export interface JsonResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** A real HTTP request; the body is sent as JSON when given. */
export async function call(
  d: Endpoint,
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<JsonResponse> {
  const res = await request(`${d.baseUrl}${url}`, {
    method,
    headers: { ...d.headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.statusCode, headers: res.headers, body: parsed };
}

/** `v` as a plain object, or a failure saying what it was instead. */
export function obj(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

/** POST /session; the new session's id, or a failure with the answer. */
export async function createSession(d: Endpoint, body: Record<string, unknown> = {}): Promise<string> {
  const res = await call(d, 'POST', '/session', body);
  if (res.status !== 200) throw new Error(`POST /session → ${res.status} ${JSON.stringify(res.body)}`);
  return String(obj(res.body).sessionId);
}

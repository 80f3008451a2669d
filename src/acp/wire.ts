/**
 * JSON-RPC 2.0 as `/acp` carries it: message shapes, their guards and
 * builders. ACP sends no batches; a message is one object.
 */

export type RpcId = string | number;

export interface RpcRequest {
  jsonrpc: '2.0';
  id: RpcId;
  method: string;
  params?: unknown;
}

export interface RpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: unknown;
}

export interface RpcErrorBody {
  code: number;
  message: string;
  data?: unknown;
}

export type RpcResponse =
  { jsonrpc: '2.0'; id: RpcId | null; result: unknown } | { jsonrpc: '2.0'; id: RpcId | null; error: RpcErrorBody };

export type RpcMessage = RpcRequest | RpcNotification | RpcResponse;

/** JSON-RPC's own error codes, and ACP's "resource not found". */
export const RPC = {
  parseError: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internalError: -32603,
  resourceNotFound: -32002,
} as const;

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is RpcId {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
}

/** A message this side can act on; anything else is answered with -32600. */
export function parseMessage(raw: unknown): RpcMessage | undefined {
  if (!isObject(raw) || raw.jsonrpc !== '2.0') return undefined;
  if (typeof raw.method === 'string') {
    if (!('id' in raw)) return raw as unknown as RpcNotification;
    return isId(raw.id) ? (raw as unknown as RpcRequest) : undefined;
  }
  // A response carries exactly one of result and error.
  if (isId(raw.id) && 'result' in raw !== 'error' in raw) return raw as unknown as RpcResponse;
  return undefined;
}

export function isRequest(m: RpcMessage): m is RpcRequest {
  return 'method' in m && 'id' in m;
}

export function isResponse(m: RpcMessage): m is RpcResponse {
  return !('method' in m);
}

export const success = (id: RpcId | null, result: unknown): RpcResponse => ({ jsonrpc: '2.0', id, result });

export const failure = (id: RpcId | null, code: number, message: string, data?: unknown): RpcResponse => ({
  jsonrpc: '2.0',
  id,
  error: { code, message, ...(data !== undefined ? { data } : {}) },
});

export const notification = (method: string, params: unknown): RpcNotification => ({ jsonrpc: '2.0', method, params });

export const request = (id: RpcId, method: string, params: unknown): RpcRequest => ({
  jsonrpc: '2.0',
  id,
  method,
  params,
});

/** The session a message is about, when its params name one. */
export function sessionOf(m: RpcMessage): string | undefined {
  if (!('params' in m) || !isObject(m.params)) return undefined;
  const id = m.params.sessionId;
  return typeof id === 'string' && id !== '' ? id : undefined;
}

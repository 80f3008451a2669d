// The one HTTP client every scenario uses, for acpd and for `qwen serve` alike: node:http with a
// keep-alive agent (so a timed request never includes a TCP handshake), JSON in, JSON out.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

interface JsonResponse {
  status: number;
  body: unknown;
  headers: http.IncomingHttpHeaders;
  /** From the request being issued to the last byte of the response. */
  ms: number;
}

export class HttpClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

  /** `headers` go with every request (a bearer token, say). */
  constructor(
    readonly baseUrl: string,
    private readonly headers: Record<string, string> = {},
  ) {}

  /** `timeoutMs`: the request fails if no answer has arrived by then (none when absent). */
  request(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    timeoutMs?: number,
  ): Promise<JsonResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const url = new URL(path, this.baseUrl);
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const req = http.request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
            ...this.headers,
            ...headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const ms = performance.now() - started;
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text === '' ? undefined : JSON.parse(text);
            } catch {
              // not JSON: keep the text
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers, ms });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      if (timeoutMs !== undefined) {
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
      }
      req.end(payload);
    });
  }

  post(path: string, body: unknown = {}): Promise<JsonResponse> {
    return this.request('POST', path, body);
  }

  /** POST that must answer 200; returns the parsed body and the time. */
  async ok(path: string, body: unknown = {}): Promise<{ body: Record<string, unknown>; ms: number }> {
    const res = await this.post(path, body);
    if (res.status !== 200 || typeof res.body !== 'object' || res.body === null) {
      throw new Error(`POST ${path} → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
    return { body: res.body as Record<string, unknown>, ms: res.ms };
  }

  close(): void {
    this.agent.destroy();
  }
}

export function textPrompt(text: string): { prompt: Array<{ type: 'text'; text: string }> } {
  return { prompt: [{ type: 'text', text }] };
}

export function stringField(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string') throw new Error(`response has no string "${key}": ${JSON.stringify(body).slice(0, 200)}`);
  return v;
}

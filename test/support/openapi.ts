/**
 * The API document as a judge of answers: every answer an app gives on a documented route is checked
 * against the document's response for that route, status and media type (Ajv over the document itself,
 * so a `$ref` to a component is followed exactly as a client generator follows it).
 *
 * `watchAnswers(t, app)` installs the check on one app before it is ready; test/support/app.ts installs it on
 * every app it builds when ACPD_TEST_CHECK_ANSWERS=1, so a whole run of the suite can be judged. Answers the
 * document does not cover (unrouted requests, HEAD, the docs themselves, a preflight) are left out; SSE
 * frames are checked by the tests that read them (`checkFrame`).
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { FastifyInstance } from 'fastify';
import type { Teardown } from './app.js';

export interface Answer {
  method: string;
  /** The route's URL pattern, as the router knows it (`/session/:id/prompt`). */
  route: string;
  status: number;
  contentType: string | undefined;
  /** The body as sent; `''` when empty. */
  body: string;
  /** Whether it carried `Retry-After` (then its documented response must declare the header). */
  retryAfter?: boolean;
}

export interface Verdict {
  answer: Answer;
  /** Why it does not match the document; undefined when it does. */
  problem?: string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A JSON Pointer token (RFC 6901). */
function pointer(token: string): string {
  return token.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** `/session/:id/prompt` → `/session/{id}/prompt`. */
export function openapiPath(route: string): string {
  return route.replace(/:(\w+)/g, '{$1}');
}

/**
 * A copy without the discriminator `mapping`s (Ajv reads the discriminator's property but refuses a mapping;
 * the branches' own `type` constants say the same).
 */
function withoutMappings(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutMappings);
  if (!isObject(value)) return value;
  const copy: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    copy[key] = key === 'discriminator' && isObject(item) ? { propertyName: item.propertyName } : withoutMappings(item);
  }
  return copy;
}

export class AnswerChecker {
  readonly #ajv: Ajv;
  readonly #doc: Record<string, unknown>;
  readonly #validators = new Map<string, ValidateFunction>();

  constructor(doc: unknown) {
    if (!isObject(doc) || !isObject(doc.paths)) throw new Error('not an OpenAPI document');
    this.#doc = doc;
    // OpenAPI 3.0 keywords (nullable, discriminator, example) are understood; the document's other
    // members are not schema keywords, hence not strict.
    this.#ajv = new Ajv({ strict: false, discriminator: true, allErrors: true });
    this.#ajv.addSchema({ ...(withoutMappings(doc) as Record<string, unknown>), $id: 'api' });
  }

  /** Whether the document lists this operation at all. */
  documents(method: string, route: string): boolean {
    return this.#operation(method, route) !== undefined;
  }

  #operation(method: string, route: string): Record<string, unknown> | undefined {
    const item = (this.#doc.paths as Record<string, unknown>)[openapiPath(route)];
    const operation = isObject(item) ? item[method.toLowerCase()] : undefined;
    return isObject(operation) ? operation : undefined;
  }

  /** Why the answer does not match its documented response; undefined when it does. */
  check(answer: Answer): string | undefined {
    const operation = this.#operation(answer.method, answer.route);
    if (operation === undefined) return `${answer.method} ${answer.route} is not documented`;
    const responses = isObject(operation.responses) ? operation.responses : {};
    const response = responses[String(answer.status)];
    if (!isObject(response)) return `status ${answer.status} is not documented`;
    if (answer.retryAfter === true && !(isObject(response.headers) && isObject(response.headers['retry-after']))) {
      return `Retry-After was sent, but the documented ${answer.status} does not declare it`;
    }
    if (!isObject(response.content)) {
      return answer.body === '' ? undefined : `a body was sent where none is documented: ${answer.body.slice(0, 200)}`;
    }
    const media = (answer.contentType ?? '').split(';')[0].trim().toLowerCase();
    if (!isObject(response.content[media])) {
      return `content type ${JSON.stringify(answer.contentType)} is not documented (${Object.keys(response.content).join(', ')})`;
    }
    const key = [
      '#',
      'paths',
      openapiPath(answer.route),
      answer.method.toLowerCase(),
      'responses',
      String(answer.status),
    ]
      .concat(['content', media, 'schema'])
      .map((token, i) => (i === 0 ? token : pointer(token)))
      .join('/');
    let validate = this.#validators.get(key);
    if (validate === undefined) {
      validate = this.#ajv.compile({ $ref: `api${key}` });
      this.#validators.set(key, validate);
    }
    let body: unknown = answer.body;
    if (media === 'application/json') {
      try {
        body = JSON.parse(answer.body);
      } catch {
        return `not JSON: ${answer.body.slice(0, 200)}`;
      }
    }
    if (validate(body)) return undefined;
    return `${this.#ajv.errorsText(validate.errors)} in ${answer.body.slice(0, 300)}`;
  }

  /** Why one SSE frame's data does not match the `SessionEvent` component; undefined when it does. */
  checkFrame(data: unknown): string | undefined {
    const key = '#/components/schemas/SessionEvent';
    let validate = this.#validators.get(key);
    if (validate === undefined) {
      validate = this.#ajv.compile({ $ref: `api${key}` });
      this.#validators.set(key, validate);
    }
    return validate(data) ? undefined : this.#ajv.errorsText(validate.errors);
  }
}

/**
 * Records every documented answer of `app` and checks it against the app's own document; at teardown, a
 * mismatch fails the test that owns the app. Call before the app is ready. Returns what was seen.
 */
export function watchAnswers(t: Teardown, app: FastifyInstance): Verdict[] {
  const verdicts: Verdict[] = [];
  let checker: AnswerChecker | undefined;
  app.addHook('onSend', async (req, reply, payload) => {
    const route = req.routeOptions.url;
    if (route === undefined || req.method === 'HEAD' || route.startsWith('/docs')) return payload;
    checker ??= new AnswerChecker(app.swagger());
    if (!checker.documents(req.method, route)) return payload;
    const body = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : '';
    const header = reply.getHeader('content-type');
    const answer: Answer = {
      method: req.method,
      route,
      status: reply.statusCode,
      contentType: typeof header === 'string' ? header : undefined,
      // A 204 goes out without the body its serializer wrote ("null").
      body: payload === null || payload === undefined || reply.statusCode === 204 ? '' : body,
      retryAfter: reply.getHeader('retry-after') !== undefined,
    };
    verdicts.push({ answer, problem: checker.check(answer) });
    return payload;
  });
  t.teardown(() => {
    const wrong = verdicts.filter((v) => v.problem !== undefined);
    if (wrong.length > 0) {
      const lines = wrong.map((v) => `${v.answer.method} ${v.answer.route} → ${v.answer.status}: ${v.problem}`);
      throw new Error(`answers that do not match the API document:\n${lines.join('\n')}`);
    }
  });
  return verdicts;
}

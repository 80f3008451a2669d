/**
 * Route schemas compiled when a route first needs them, not at `ready`.
 *
 * Fastify compiles every route's validators (ajv) and response serializers
 * (fast-json-stringify) while it starts: for acpd's routes that was most of
 * the time from start to listening and a sixth of the idle RSS, for routes a
 * given deployment may never call. These factories hand Fastify the same
 * compilers it would build itself (same ajv options, same shared schemas),
 * wrapped so that each schema is compiled on its first use and kept.
 *
 * `compileAllSchemas()` compiles whatever is still pending: a test calls it
 * so that a schema ajv would refuse still fails the suite, not a request.
 */
import { AjvCompiler } from '@fastify/ajv-compiler';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import type { FastifyServerOptions } from 'fastify';

type Validate = ((data: unknown, context?: unknown) => unknown) & { errors?: unknown };
type Serialize = (payload: unknown) => string;
interface RouteSchema {
  schema: unknown;
  httpPart?: string;
}

/** Compilations not run yet, per compiler factory (so per app). */
export interface PendingSchemas {
  pending: Set<() => void>;
}

/** Header names are matched lower-cased; Fastify lower-cases a header schema only for its own compiler. */
function checkHeaderSchema(route: RouteSchema & { url?: string }): void {
  if (route.httpPart !== 'headers') return;
  const properties = (route.schema as { properties?: Record<string, unknown> } | undefined)?.properties ?? {};
  for (const name of Object.keys(properties)) {
    if (name !== name.toLowerCase()) {
      throw new Error(`header schema of ${route.url ?? 'a route'}: name ${JSON.stringify(name)} must be lower case`);
    }
  }
}

function lazyValidator(compile: () => Validate, pending: Set<() => void>): Validate {
  let real: Validate | undefined;
  const force = (): Validate => {
    if (real === undefined) {
      real = compile();
      pending.delete(force);
    }
    return real;
  };
  pending.add(force);
  const validate: Validate = (data, context) => {
    const fn = force();
    const result = fn(data, context);
    validate.errors = fn.errors;
    return result;
  };
  // Fastify passes the parent object (ajv's way to replace a coerced root) only to a function that has this.
  Object.defineProperty(validate, 'schemaEnv', { value: true });
  return validate;
}

function lazySerializer(compile: () => Serialize, pending: Set<() => void>): Serialize {
  let real: Serialize | undefined;
  const force = (): Serialize => {
    if (real === undefined) {
      real = compile();
      pending.delete(force);
    }
    return real;
  };
  pending.add(force);
  return (payload) => force()(payload);
}

/** Fastify's `schemaController` option, and the set of compilations still to run. */
export function lazySchemaController(): {
  schemaController: NonNullable<FastifyServerOptions['schemaController']>;
  schemas: PendingSchemas;
} {
  const schemas: PendingSchemas = { pending: new Set() };
  const buildAjv = AjvCompiler();
  const buildFjs = SerializerSelector();
  type Factory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;
  // Fastify's types want ajv's own function types; these wrappers behave as them where Fastify looks.
  const compilersFactory = {
    buildValidator(externalSchemas: Parameters<typeof buildAjv>[0], ajvOptions: Parameters<typeof buildAjv>[1]) {
      const compile = buildAjv(externalSchemas, ajvOptions);
      return (route: Parameters<ReturnType<typeof buildAjv>>[0]) => {
        checkHeaderSchema(route);
        return lazyValidator(() => compile(route) as Validate, schemas.pending);
      };
    },
    buildSerializer(
      externalSchemas: Parameters<typeof buildFjs>[0],
      serializerOptions: Parameters<typeof buildFjs>[1],
    ) {
      const compile = buildFjs(externalSchemas, serializerOptions);
      return (route: Parameters<ReturnType<typeof buildFjs>>[0]) =>
        lazySerializer(() => compile(route) as Serialize, schemas.pending);
    },
  } as unknown as Factory;
  return { schemaController: { compilersFactory }, schemas };
}

/** Compile every schema not compiled yet; throws what ajv or fast-json-stringify would have. */
export function compileAllSchemas(schemas: PendingSchemas): number {
  const all = [...schemas.pending];
  for (const force of all) force();
  return all.length;
}

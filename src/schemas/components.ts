/**
 * The shared schemas: each has an `$id`, is added once with `addSchema`
 * (app.ts), is referred to by routes with `refTo`/`Type.Ref`, and appears in
 * the API document as the component of that name.
 */
import { acpSchemas } from './acp.js';
import { ErrorEnvelope } from './common.js';
import { eventSchemas } from './events.js';

export const sharedSchemas = [ErrorEnvelope, ...acpSchemas, ...eventSchemas];

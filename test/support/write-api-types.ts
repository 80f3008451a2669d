/** `npm run openapi:types`: writes test/generated/acpd-api.d.ts from the default daemon's API document. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { API_TYPES_FILE, apiTypes, defaultDocument } from './api-types.js';

writeFileSync(API_TYPES_FILE, await apiTypes(await defaultDocument()));
process.stdout.write(`wrote ${fileURLToPath(API_TYPES_FILE)}\n`);

/**
 * The test helpers under their old address, for test files that still import './helper.js'. New code
 * imports the module that does the job: support/app.ts, support/http.ts, support/sse.ts,
 * support/values.ts, support/rejections.ts, and ../harness/ (waits, the process table, free ports).
 */
export {
  buildTestApp,
  startDaemon,
  steerDaemon,
  tempDir,
  testConfig,
  type SteeredDaemon,
  type Teardown,
  type TestDaemon,
  type TestOptions,
} from './support/app.js';
export { call, createSession, obj, type JsonResponse } from './support/http.js';
export { isType, lastEventId, openEvents, type SseFrame, type SseStream } from './support/sse.js';
export { chunk, range, textPrompt } from './support/values.js';
export { rejection, watchUnhandled } from './support/rejections.js';
export { spinUntil, until, WAIT_LIMIT_MS, within } from '../harness/wait.js';
export { livingDescendants, livingInGroup } from '../harness/proc-table.js';
export { freePort } from '../harness/ports.js';

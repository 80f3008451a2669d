// scrubEnvironment away from Linux: the variable still leaves process.env-like objects, and the outcome
// says why /proc could not be rewritten, so that server.ts can warn. (On Linux the real daemon is checked
// against /proc/<pid>/environ in server.test.ts.)
import t from 'tap';
import { scrubEnvironment } from '../src/services/scrub-env.js';

t.test('elsewhere than Linux: deleted from the object, and not claimed as scrubbed', async (t) => {
  const env: NodeJS.ProcessEnv = { ACPD_TOKEN: 'secret', OTHER: 'x' };
  const outcome = scrubEnvironment('ACPD_TOKEN', env, 'darwin');
  t.same(env, { OTHER: 'x' });
  t.same(outcome, { scrubbed: false, reason: 'cannot overwrite the environment on darwin' });
});

t.test('nothing to do when the variable is not set', async (t) => {
  const env: NodeJS.ProcessEnv = { OTHER: 'x' };
  t.same(scrubEnvironment('ACPD_TOKEN', env, 'linux'), { scrubbed: true });
  t.same(env, { OTHER: 'x' });
});

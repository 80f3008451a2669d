/**
 * How V8 runs the daemon while it starts, and after.
 *
 * Starting is a burst of code that runs once: modules evaluate, TypeBox builds
 * the route schemas, Fastify builds the router. V8 treats it like any other
 * work, and three of its reactions are waste here (measured on the bundled
 * daemon, bench/notes/16-footprint.md):
 *
 * - Objects that survive its scavenges make it grow the young generation,
 *   from 1 MB semi-spaces to 8 MB ones. Once the daemon listens that space is
 *   almost empty (16 MB committed, under 0.5 MB in use): ~8 MB of resident
 *   memory for nothing.
 * - Start-up functions that run hot enough get optimized by TurboFan, which
 *   pages in the compiler and keeps optimized code for functions that never
 *   run again: ~6 MB of resident memory and a little CPU.
 * - Functions that run a few times get machine code from the baseline
 *   compiler (Sparkplug), also for functions that never run again: ~1.3 MB,
 *   and no CPU saved (the bytecode interpreter starts the daemon as fast).
 *
 * So the executable's entry enters start-up mode before it loads the daemon
 * (the semi-spaces do not grow; no TurboFan, no Sparkplug: V8's interpreter
 * runs start-up code), and the daemon leaves it as soon as it listens,
 * before it serves anything: from then on V8 grows the young generation and
 * optimizes hot code exactly as it would have, so the per-event path is not
 * traded for the idle footprint. (Once a daemon has served real work it pays
 * for what that work needs, as before.)
 *
 * V8 reads these flags whenever it decides (to grow the space, to compile a
 * function), so setting them at run time takes effect. A process started with
 * flags of its own about V8's compilers or young generation (`--jitless`,
 * `--no-opt`, `--max-semi-space-size`, … on the command line or in
 * NODE_OPTIONS) is left exactly as started: no start-up mode, nothing restored.
 */
import { setFlagsFromString } from 'node:v8';

/** V8's own --semi-space-growth-factor (Node 20's V8 11.3 and later). */
const V8_DEFAULT_GROWTH_FACTOR = 2;

/** The V8 flags that say how it compiles and how its young generation grows. */
const OWN_FLAGS =
  /--(?:no-)?(?:jitless|lite-mode|opt|turbofan|sparkplug|maglev|max-lazy|semi-space|max-semi-space|min-semi-space)/;

/**
 * Whether the process is in start-up mode: kept on the global object, as the
 * entry and the bundled daemon each have their own copy of this module.
 */
const ENTERED = Symbol.for('acpd.startUpMode');
const marks = globalThis as { [ENTERED]?: boolean };

export function enterStartUpMode(execArgv = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): boolean {
  // V8 reads `_` in a flag's name as `-`.
  if ([...execArgv, nodeOptions].some((flags) => OWN_FLAGS.test(flags.replaceAll('_', '-')))) return false;
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--no-turbofan');
  setFlagsFromString('--no-sparkplug');
  marks[ENTERED] = true;
  return true;
}

export function leaveStartUpMode(): void {
  if (marks[ENTERED] !== true) return;
  marks[ENTERED] = false;
  setFlagsFromString(`--semi-space-growth-factor=${V8_DEFAULT_GROWTH_FACTOR}`);
  setFlagsFromString('--turbofan');
  setFlagsFromString('--sparkplug');
}

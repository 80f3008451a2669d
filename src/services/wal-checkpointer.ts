/**
 * Checkpoints of the event log's WAL, made on a worker thread.
 *
 * SQLite folds the WAL back into the database file by itself once the WAL
 * holds `wal_autocheckpoint` pages: inside whichever commit crosses that
 * line, on the daemon's event loop, copying the pages not yet copied and
 * waiting for an fsync of the WAL and one of the database file. Under a
 * streamed answer that was a large part of what the durable log cost in wall
 * time (bench/notes/16-round-two.md, step 6). So a worker thread with a
 * connection of its own makes a PASSIVE checkpoint each time about
 * `everyPages` pages went to the WAL (counted from the commits' bytes): it
 * copies and syncs beside the commits (WAL mode lets one connection write
 * while another checkpoints), and SQLite starts the WAL over at the first
 * commit that finds it wholly copied.
 *
 * Under a steady stream of commits that moment may never come (a commit
 * always lands while the worker copies), so the daemon's connection keeps
 * its automatic checkpoints, at a higher mark: past it, a commit copies the
 * few pages the worker has not and syncs them, and the WAL starts over. An
 * automatic checkpoint never waits for the worker's: while that one runs, the
 * commit goes on and the next one tries again.
 *
 * The thread starts with the first checkpoint (an idle daemon never pays
 * for it) and ends after `idleMs` without one. Should it fail to start or
 * die, `fallBack` is called once (the caller puts SQLite's own mark back)
 * and the checkpointer stays off.
 */
import { Worker } from 'node:worker_threads';

/** What the worker is started with. */
export interface CheckpointWorkerData {
  /** The database file (its -wal beside it). */
  file: string;
}

/** The worker's answer to a checkpoint: pages copied and the WAL's length, or why it failed. */
export type CheckpointDone = { pages: number; walPages: number } | { error: string };

export interface WalCheckpointerOptions {
  file: string;
  /** WAL pages written between two checkpoints (as `pagesOf` counts them). */
  everyPages: number;
  /** A thread with no checkpoint to make for this long ends. */
  idleMs: number;
  /** Called once when the thread cannot start or dies: SQLite's own checkpoints are the caller's again. */
  fallBack(reason: string): void;
  /** The worker's module; the one beside this file when absent (tests pass another). */
  workerUrl?: URL;
}

/** WAL pages between two checkpoints of the worker: SQLite's own default mark. */
export const CHECKPOINT_EVERY_PAGES = 1000;
/**
 * The daemon connection's own mark while the worker makes the checkpoints: 4000 pages (16 MB of WAL at
 * 4 KiB a page), four times SQLite's default, which comes back when the worker is gone.
 */
export const AUTOCHECKPOINT_PAGES_WITH_WORKER = 4000;
export const SQLITE_AUTOCHECKPOINT_PAGES = 1000;
export const CHECKPOINTER_IDLE_MS = 10_000;

/**
 * About how many pages a commit of `bytes` of frames adds to the WAL: its
 * rows' pages, and two more (the table's leaf and the database header or a
 * free-list page). A commit of one small event still writes three pages.
 */
export function pagesOf(bytes: number): number {
  return Math.ceil(bytes / 4096) + 2;
}

export class WalCheckpointer {
  private worker: Worker | undefined;
  private written = 0;
  private busy = false;
  /** A checkpoint was asked for while one was running: another follows it. */
  private again = false;
  private failed = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Checkpoints the worker made, and the pages they copied (tests, the bench). */
  checkpoints = 0;
  pagesCopied = 0;
  /** Threads started so far. */
  started = 0;

  constructor(private readonly opts: WalCheckpointerOptions) {}

  /** Whether the thread is up now. */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Whether checkpoints are this class's to make (false once it fell back). */
  get active(): boolean {
    return !this.failed;
  }

  /** Counts the WAL pages of a commit of `bytes`; asks for a checkpoint once they add up to `everyPages`. */
  wrote(bytes: number): void {
    if (this.failed) return;
    this.written += pagesOf(bytes);
    if (this.written < this.opts.everyPages) return;
    this.written = 0;
    this.request();
  }

  /** Asks for a checkpoint now (one follows the running one, if any). */
  request(): void {
    if (this.failed) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    const worker = this.worker ?? this.start();
    if (!worker) return;
    clearTimeout(this.idleTimer);
    this.busy = true;
    worker.postMessage('checkpoint');
  }

  /** Lets the thread go: it closes its connection and ends; nothing waits for it. */
  close(): void {
    clearTimeout(this.idleTimer);
    this.failed = true;
    this.stop();
  }

  private start(): Worker | undefined {
    const data: CheckpointWorkerData = { file: this.opts.file };
    let worker: Worker;
    try {
      worker = new Worker(this.opts.workerUrl ?? new URL('../services/wal-checkpoint-worker.js', import.meta.url), {
        workerData: data,
        // A thread that only ever runs one pragma: a small young generation, and none of the daemon's own
        // `--import`/`--require` hooks (a tracer, a test runner's) loaded into it again.
        execArgv: [],
        resourceLimits: { maxYoungGenerationSizeMb: 1 },
      });
    } catch (err) {
      this.fail(err instanceof Error ? err.message : String(err));
      return undefined;
    }
    this.started++;
    // Never what keeps the daemon alive.
    worker.unref();
    worker.on('message', (done: CheckpointDone) => this.finished(worker, done));
    worker.on('error', (err) => this.fail(err.message));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.fail(`checkpoint worker exited with code ${code}`);
    });
    this.worker = worker;
    return worker;
  }

  private finished(worker: Worker, done: CheckpointDone): void {
    if (worker !== this.worker) return;
    this.busy = false;
    if ('error' in done) {
      // A checkpoint that failed (a full disk) is tried again with the next one; the WAL is still whole.
      this.again = false;
    } else {
      this.checkpoints++;
      this.pagesCopied += done.pages;
    }
    if (this.again) {
      this.again = false;
      this.request();
      return;
    }
    this.idleTimer = setTimeout(() => this.stop(), this.opts.idleMs);
    this.idleTimer.unref();
  }

  /** Ends the thread (after its running checkpoint, if any: messages are handled in order). */
  private stop(): void {
    const worker = this.worker;
    this.worker = undefined;
    this.busy = false;
    this.again = false;
    worker?.postMessage('close');
  }

  private fail(reason: string): void {
    if (this.failed) return;
    this.failed = true;
    const worker = this.worker;
    this.worker = undefined;
    void worker?.terminate();
    this.opts.fallBack(reason);
  }
}

/**
 * Checkpoints of the event log's WAL, made on a worker thread.
 *
 * SQLite folds the WAL back into the database file by itself once the WAL
 * holds about 1000 pages: inside whichever commit crosses that line, on the
 * daemon's event loop, copying every page and waiting for an fsync of the
 * WAL and one of the database file. Under a streamed answer that is most of
 * what the durable log costs in wall time (bench/notes/16-round-two.md,
 * step 6). So the daemon's connection turns those automatic checkpoints off
 * and this class asks a worker thread, with a connection of its own, to make
 * a PASSIVE checkpoint after every `everyBytes` written: the commits go on
 * while it runs (WAL mode lets one connection write while another
 * checkpoints), and SQLite starts the WAL over from its beginning at the
 * first commit after a checkpoint that copied it all.
 *
 * SQLite starts the WAL over only at a commit that finds it wholly copied,
 * and under a steady stream of commits a checkpoint running beside them
 * never quite catches up: the WAL would grow for as long as the stream
 * lasts. So once the WAL file is larger than `capBytes`, `truncate` is
 * called on the event loop: the daemon's connection copies the little the
 * worker has not and truncates the file (one blocking checkpoint per
 * `capBytes` of WAL instead of one per 4 MB).
 *
 * The thread starts with the first checkpoint (an idle daemon never pays
 * for it) and ends after `idleMs` without one. Should it fail to start or
 * die, `fallBack` is called once (the daemon's connection takes up the
 * automatic checkpoints again) and the checkpointer stays off.
 */
import { statSync } from 'node:fs';
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
  /** Frame bytes committed between two checkpoints (the WAL grows by more: whole pages). */
  everyBytes: number;
  /** Past this size of the WAL file, `truncate` is called instead of asking the worker. */
  capBytes: number;
  /** A checkpoint on the caller's connection that truncates the WAL file. */
  truncate(): void;
  /** A thread with no checkpoint to make for this long ends. */
  idleMs: number;
  /** Called once when the thread cannot start or dies: the caller checkpoints by itself from then on. */
  fallBack(reason: string): void;
  /** The worker's module; the one beside this file when absent (tests pass another). */
  workerUrl?: URL;
}

/**
 * Frame bytes between two checkpoints. A commit writes whole pages (its runs'
 * and the B-tree's), 1 to 8 times the bytes of its frames: about SQLite's own
 * default (1000 pages of 4 KiB) of WAL.
 */
export const CHECKPOINT_EVERY_BYTES = 1024 * 1024;
/** The WAL file size past which the event loop truncates it. */
export const WAL_CAP_BYTES = 32 * 1024 * 1024;
export const CHECKPOINTER_IDLE_MS = 10_000;

export class WalCheckpointer {
  private worker: Worker | undefined;
  private written = 0;
  private busy = false;
  /** A checkpoint was asked for while one was running: another follows it. */
  private again = false;
  private failed = false;
  private readonly walFile: string;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Checkpoints the worker made, and the pages they copied (tests, the bench). */
  checkpoints = 0;
  pagesCopied = 0;
  /** Threads started so far. */
  started = 0;

  /** Truncations the WAL's size called for. */
  truncations = 0;

  constructor(private readonly opts: WalCheckpointerOptions) {
    this.walFile = `${opts.file}-wal`;
  }

  /** Whether the thread is up now. */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Whether checkpoints are this class's to make (false once it fell back). */
  get active(): boolean {
    return !this.failed;
  }

  /** Counts bytes a commit wrote; asks for a checkpoint once they add up to `everyBytes`. */
  wrote(bytes: number): void {
    if (this.failed) return;
    this.written += bytes;
    if (this.written < this.opts.everyBytes) return;
    this.written = 0;
    const walSize = statSync(this.walFile, { throwIfNoEntry: false })?.size ?? 0;
    if (walSize > this.opts.capBytes) {
      this.truncations++;
      this.opts.truncate();
    } else this.request();
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

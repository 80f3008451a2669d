/**
 * The worker thread of `WalCheckpointer`: its own connection to the event
 * log's database, which folds the WAL into the database file whenever the
 * daemon asks. A checkpoint copies pages and waits for two fsyncs; here it
 * does so beside the event loop instead of inside a commit.
 *
 * Messages in: `'checkpoint'` (answered with a `CheckpointDone`) and
 * `'close'` (closes the connection; the thread then ends by itself).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointDone, CheckpointWorkerData } from './wal-checkpointer.js';

const port = parentPort;
if (port === null) throw new Error('wal-checkpoint-worker runs as a worker thread only');
const { file } = workerData as CheckpointWorkerData;
// The database exists (the daemon's connection made it); this one never creates or changes its schema.
const db = new Database(file, { fileMustExist: true });
// As the daemon's connection: a checkpoint syncs the WAL and the database file, a commit does not.
db.pragma('synchronous = NORMAL');

port.on('message', (message: unknown) => {
  if (message === 'close') {
    db.close();
    port.close();
    return;
  }
  if (message !== 'checkpoint') return;
  let done: CheckpointDone;
  try {
    // PASSIVE never waits for the daemon's writes: it copies what is committed and lets them go on.
    const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    done = { pages: row?.checkpointed ?? 0, walPages: row?.log ?? 0 };
  } catch (err) {
    done = { error: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(done);
});

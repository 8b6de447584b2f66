// One train process a run folder: a second one on it (a --resume in another terminal) would
// interleave its checkpoints and metrics with the first's.
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RrrError } from '../engine/errors.js';
import { WriteError } from '../util/atomic.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * `dir` and the folders above it that are missing, one at a time: node's recursive mkdir loops
 * forever under /proc (mkdir gives ENOENT there, its parent EEXIST), and a failure here names
 * the folder it could not make.
 */
function makeFolder(dir: string, out: string): void {
  if (existsSync(dir)) return;
  makeFolder(dirname(dir), out);
  try {
    mkdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') throw new RrrError(`--out ${out}: cannot make the folder ${dir} (${code ?? (e as Error).message})`);
  }
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A lock file's text (its holder's PID), or undefined when it is gone. */
function lockText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The live process, other than this one, whose PID a lock's text holds; undefined: the lock is dead. */
function liveHolder(text: string): number | undefined {
  const pid = Number.parseInt(text, 10);
  return pid > 0 && pid !== process.pid && alive(pid) ? pid : undefined;
}

/** Links `mine` in as `path`: true when this process now holds it. */
function take(mine: string, path: string): boolean {
  try {
    linkSync(mine, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  }
}

/**
 * Removes the lock `path` that reads `deadText` (a PID that is gone, or garbage), one process at
 * a time (under `path`.takeover): a lock is deleted by name, and two processes that both saw the
 * dead lock would otherwise both go on, the second deleting the first's new lock (6 processes at
 * once did in 14 of 30 trials). The takeover lock is held for one read and one delete; one left
 * by a holder that died there (or that had our PID, in an earlier container) is removed.
 */
function takeOver(mine: string, path: string, deadText: string): void {
  const guard = `${path}.takeover`;
  for (let i = 0; i < 400; i++) {
    if (take(mine, guard)) {
      try {
        if (lockText(path) === deadText) rmSync(path, { force: true });
      } finally {
        rmSync(guard, { force: true });
      }
      return;
    }
    const text = lockText(guard);
    if (text !== undefined && liveHolder(text) === undefined) rmSync(guard, { force: true });
    else sleepMs(5);
  }
}

/**
 * Removes the temporary files (`<name>.tmp-<pid>`, see util/atomic.ts and the addon's GGUF
 * writes) that processes gone before renaming them left in the run folder and its checkpoint:
 * a killed save leaves one as large as the trainer's state. Called with the lock held, so no
 * other train is writing there; a live process's (an export into the folder) stays.
 */
function removeStaleTemps(out: string): void {
  for (const dir of [out, join(out, 'checkpoint')]) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (staleTemp(f)) rmSync(join(dir, f), { force: true });
  }
}

function staleTemp(name: string): boolean {
  const m = /\.tmp-(\d+)$/.exec(name);
  return m !== null && liveHolder(m[1]!) === undefined;
}

/**
 * Files a train leaves in a new run's folder before its run.json is there: its lock, and the
 * temporary file of a run.json whose write was killed. Such a folder takes a new run.
 */
export function leftByTrain(name: string): boolean {
  return name === 'train.lock' || staleTemp(name);
}

/**
 * Takes `out`/train.lock for this process, or refuses in one line while another live process
 * holds it. A lock left by a process that is gone (killed, the machine restarted: a container's
 * train may well have been PID 1 too) is taken over. Released by the returned function, or when
 * the process exits, whichever comes first.
 */
export function lockRunFolder(out: string): () => void {
  makeFolder(out, out);
  const path = join(out, 'train.lock');
  // Made whole, then linked in: a reader never meets a lock without its PID.
  const mine = `${path}.${process.pid}`;
  try {
    try {
      writeFileSync(mine, `${process.pid}\n`);
    } catch (e) {
      throw new RrrError(`--out ${out}: ${new WriteError(mine, e).message}`);
    }
    for (let attempt = 0; attempt < 10; attempt++) {
      if (take(mine, path)) {
        removeStaleTemps(out);
        const release = () => rmSync(path, { force: true });
        process.once('exit', release);
        return () => {
          process.off('exit', release);
          release();
        };
      }
      const text = lockText(path);
      if (text === undefined) continue; // released between the two calls
      const pid = liveHolder(text);
      if (pid !== undefined) throw new RrrError(`--out ${out}: in use by another train (process ${pid}, ${path}; if no train runs there, remove it)`);
      takeOver(mine, path, text);
    }
    throw new RrrError(`--out ${out}: ${path} could not be taken`);
  } finally {
    rmSync(mine, { force: true });
  }
}

// One train process a run folder: a second one on it (a --resume in another terminal) would
// interleave its checkpoints and metrics with the first's.
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RrrError } from '../engine/errors.js';

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

/**
 * Takes `out`/train.lock for this process, or refuses in one line while another live process
 * holds it. A lock left by a process that is gone (killed, the machine restarted: a container's
 * train may well have been PID 1 too) is taken over. Released by the returned function, or when
 * the process exits, whichever comes first. Two processes taking over one dead lock in the same
 * instant could both go on; for a command started by hand that is left as it is.
 */
export function lockRunFolder(out: string): () => void {
  makeFolder(out, out);
  const path = join(out, 'train.lock');
  // Made whole, then linked in: a reader never meets a lock without its PID.
  const mine = `${path}.${process.pid}`;
  writeFileSync(mine, `${process.pid}\n`);
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        linkSync(mine, path);
        const release = () => rmSync(path, { force: true });
        process.once('exit', release);
        return () => {
          process.off('exit', release);
          release();
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let pid: number;
      try {
        pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      } catch {
        continue; // released between the two calls
      }
      if (pid !== process.pid && pid > 0 && alive(pid)) throw new RrrError(`--out ${out}: in use by another train (process ${pid}, ${path})`);
      rmSync(path, { force: true });
    }
    throw new RrrError(`--out ${out}: ${path} could not be taken`);
  } finally {
    rmSync(mine, { force: true });
  }
}

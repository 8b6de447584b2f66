// One train process a run folder: a second one on it (a --resume in another terminal) would
// interleave its checkpoints and metrics with the first's.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
 * Takes `out`/train.lock for this process, or refuses in one line while a live process holds it;
 * a lock left by a process that died (killed, power cut) is taken over. Returns its release.
 */
export function lockRunFolder(out: string): () => void {
  mkdirSync(out, { recursive: true });
  const path = join(out, 'train.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let held: string;
    try {
      held = readFileSync(path, 'utf8');
    } catch {
      continue; // released between the two calls
    }
    const pid = Number.parseInt(held, 10);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) throw new RrrError(`--out ${out}: in use by another train (process ${pid}, ${path})`);
    rmSync(path, { force: true });
  }
  throw new RrrError(`--out ${out}: ${path} could not be taken`);
}

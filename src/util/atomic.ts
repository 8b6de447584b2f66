// Files the user may keep (checkpoints, caches, metrics summaries) are written to a temporary
// sibling and renamed, so an interruption never leaves a half-written file under the real name.
import { appendFileSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** A file that could not be written: one line naming it and why (a full disk, a read-only folder). */
export class WriteError extends Error {
  constructor(path: string, cause: unknown) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why: Record<string, string> = {
      ENOSPC: 'no space left on the device',
      EDQUOT: 'over the disk quota',
      EROFS: 'a read-only file system',
      EACCES: 'permission denied',
      EPERM: 'not permitted',
      ENOENT: 'its folder is missing',
      ENOTDIR: 'a part of its path is a file, not a folder',
      EEXIST: 'a part of its path is a file, not a folder',
      EISDIR: 'it is a folder',
    };
    super(`${path}: cannot write (${(code && why[code]) ?? (cause as Error).message})`);
    this.name = 'WriteError';
  }
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // Where the path itself is wrong (a file where a folder should be) there is no temp to remove.
    }
    throw new WriteError(path, e);
  }
}

/** Appends to `path`; a failure is a WriteError (what was written of `data` may stay: readers drop an unfinished last line). */
export function appendFileOrFail(path: string, data: string): void {
  try {
    appendFileSync(path, data);
  } catch (e) {
    throw new WriteError(path, e);
  }
}

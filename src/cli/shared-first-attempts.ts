// First attempts shared between runs. They are the base model's greedy answers, which nothing a
// run trains changes, so a new run over the same model file, items and answer length takes them
// from an earlier run instead of redoing them (over a large dataset, hours on a CPU). Kept in the
// user's cache folder beside the embedded model; a run folder keeps its own copy for --resume.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../engine/native.js';
import { readFailureCache, writeFailureCache, type FirstAttemptResult } from '../rrr/failures.js';
import { cacheDir } from './default-model.js';

export class SharedFirstAttempts {
  private constructor(
    /** The cache file. */
    readonly path: string,
    private readonly key: string,
  ) {}

  /**
   * The cache entry of a run's first attempts. `runKey` (failureKey) names the model by path and
   * size; the file's modification time and this package's version are added, so a model file
   * rewritten in place, or a verifier that scores differently, is not taken for the same.
   */
  static of(model: string, runKey: string): SharedFirstAttempts {
    const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
    const key = createHash('sha256').update(JSON.stringify([runKey, statSync(model).mtimeMs, version])).digest('hex');
    return new SharedFirstAttempts(join(cacheDir(), 'first-attempts', `${key.slice(0, 32)}.json`), key);
  }

  /**
   * An earlier run's result, where this run can take it: all of the items, or a pass that stopped
   * after a whole number of this run's batches (a pass goes on batch by batch).
   */
  read(total: number, batchSize: number): FirstAttemptResult | undefined {
    const r = readFailureCache(this.path, this.key);
    return r && (r.attempted >= total || r.attempted % batchSize === 0) && r.attempted > 0 ? r : undefined;
  }

  /** Best effort: a cache folder that cannot be written costs the next run time, not this one its result. */
  write(result: FirstAttemptResult): void {
    try {
      mkdirSync(join(this.path, '..'), { recursive: true });
      writeFailureCache(this.path, this.key, result);
    } catch {
      // Nothing to do: the run folder has its own copy.
    }
  }
}

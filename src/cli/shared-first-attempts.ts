// First attempts shared between runs. They are the base model's greedy answers, which nothing a
// run trains changes, so a new run over the same model file, items and answer length takes them
// from an earlier run instead of redoing them (over a large dataset, hours on a CPU). Kept in the
// user's cache folder beside the embedded model; a run folder keeps its own copy for --resume.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { readFailureCache, writeFailureCache } from '../rrr/failures.js';
import type { FirstAttemptResult } from '../rrr/types.js';
import { cacheDir } from './default-model.js';

/** Entries neither written nor reused for this long are removed when another is written. */
const KEEP_DAYS = 90;

export class SharedFirstAttempts {
  private constructor(
    /** The cache file. */
    readonly path: string,
    private readonly key: string,
  ) {}

  /**
   * The cache entry of a run's first attempts. `runKey` (failureKey) names the model by path and
   * size; added are `fingerprint` (model-fingerprint.ts: the file's contents), so a model file
   * replaced in place is not taken for the same, this package's version, so a verifier that
   * scores differently is not, and how the answers were computed (`engine`: the device, flash
   * attention), whose rounding can tip a greedy token, so that a run's first attempts are the
   * ones it would make.
   */
  static of(fingerprint: string, runKey: string, engine: { device: string; flashAttn: boolean }): SharedFirstAttempts {
    const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
    const key = createHash('sha256').update(JSON.stringify([runKey, fingerprint, version, engine.device, engine.flashAttn])).digest('hex');
    return new SharedFirstAttempts(join(cacheDir(), 'first-attempts', `${key.slice(0, 32)}.json`), key);
  }

  /**
   * An earlier run's result, where this run can take it: all of the items, or a pass that stopped
   * after a whole number of this run's batches (a pass goes on batch by batch).
   */
  read(itemIds: ReadonlySet<string>, batchSize: number): FirstAttemptResult | undefined {
    const r = readFailureCache(this.path, this.key, itemIds);
    if (!(r && (r.attempted >= itemIds.size || r.attempted % batchSize === 0) && r.attempted > 0)) return undefined;
    try {
      // Reused: it stays as long as a new entry would.
      const now = new Date();
      utimesSync(this.path, now, now);
    } catch {
      // A read-only cache still serves.
    }
    return r;
  }

  /** Best effort: a cache folder that cannot be written costs the next run time, not this one its result. */
  write(result: FirstAttemptResult): void {
    try {
      mkdirSync(join(this.path, '..'), { recursive: true });
      writeFailureCache(this.path, this.key, result);
      this.prune();
    } catch {
      // Nothing to do: the run folder has its own copy.
    }
  }

  /** An entry a file per model, items and answer length: without this the folder only grows. */
  private prune(): void {
    const dir = join(this.path, '..');
    const before = Date.now() - KEEP_DAYS * 24 * 3600 * 1000;
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (f.endsWith('.json') && statSync(p).mtimeMs < before) rmSync(p, { force: true });
    }
  }
}

// Tiny models for tests, generated on demand into one temp folder per test process and
// removed when the process exits.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel } from '../../src/engine/tiny-model.js';
import type { TinyModelOptions } from '../../src/engine/types.js';

let dir: string | undefined;

export function testDir(): string {
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'rrr-test-'));
    const d = dir;
    process.on('exit', () => rmSync(d, { recursive: true, force: true }));
  }
  return dir;
}

const made = new Map<string, Promise<string>>();

/** Path of a tiny model with these options (made once per process). */
export function tinyModel(opts: Omit<TinyModelOptions, 'out'> = {}): Promise<string> {
  const key = JSON.stringify(opts);
  let p = made.get(key);
  if (!p) {
    const out = join(testDir(), `tiny-${made.size}.gguf`);
    p = makeTinyModel({ ...opts, out }).then(() => out);
    made.set(key, p);
  }
  return p;
}

/**
 * Device the engine tests run on: CPU by default (CI has no GPU); RRR_TEST_DEVICE=cuda runs the
 * same checks on a CUDA build (scripts/gpu-check.sh does).
 */
export const TEST_DEVICE = (process.env.RRR_TEST_DEVICE ?? 'cpu') as 'cpu' | 'cuda' | 'auto';

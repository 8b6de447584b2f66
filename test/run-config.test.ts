// run.json's settings as train's flags give them (src/cli/run-config.ts).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, RUN_FLAGS } from '../src/cli/run-config.js';
import type { TrainArgs } from '../src/cli/commands/train-flags.js';

const dir = mkdtempSync(join(tmpdir(), 'rrr-run-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'm.gguf');
writeFileSync(model, 'not read: only its size is kept');

const args = (more: Partial<TrainArgs>): TrainArgs => ({ resume: false, device: 'auto', 'skip-bad-lines': false, json: false, 'kept-layers': 'auto', ...more }) as TrainArgs;

test("the GRPO settings' flags land in run.json, and a resumed run refuses them", () => {
  const cfg = buildConfig(args({ 'min-lr-ratio': 0.25, 'advantage-std': 'population', 'advantage-eps': 1e-4, 'passes-per-batch': 2 }), model);
  assert.equal(cfg.grpo.minLrRatio, 0.25);
  assert.equal(cfg.grpo.advantageStd, 'population');
  assert.equal(cfg.grpo.advantageEps, 1e-4);
  assert.equal(cfg.grpo.passesPerBatch, 2);
  const plain = buildConfig(args({}), model);
  assert.deepEqual([plain.grpo.minLrRatio, plain.grpo.advantageStd, plain.grpo.advantageEps, plain.grpo.passesPerBatch], [0.1, 'sample', 1e-6, 1]);
  // New runs take schedule 2 (no failure twice in a step); run.json keeps it for resume.
  assert.equal(plain.schedule, 2);
  for (const f of ['min-lr-ratio', 'advantage-std', 'advantage-eps', 'passes-per-batch'] as const) assert.ok((RUN_FLAGS as readonly string[]).includes(f), f);
  assert.throws(() => buildConfig(args({ 'passes-per-batch': 65 }), model), /^RrrError: --passes-per-batch: must be an integer in \[1, 64\] \(got 65\)$/);
});

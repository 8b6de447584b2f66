// Our nodes' CUDA code (native/cuda: kernels, cuBLAS calls) run on the CPU, emulated
// (native/cuda-emu, RRR_EMULATE_CUDA=1), under the tests that compare our nodes with ggml's ops:
// a machine without a GPU then checks what a GPU runs (the blocks' indexing, barriers and warp
// shuffles, the products' leading dimensions), not only the math the CPU's loops share with it.
// A build with CUDA has no emulation: there the same tests run on the GPU itself
// (scripts/device/gpu-check.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInfo } from '../src/engine/devices.js';
import { FUSED_TEST_FILES, FUSED_TEST_PATTERN } from './helpers/fused-tests.js';

const here = dirname(fileURLToPath(import.meta.url));
const emulated = buildInfo().cudaEmulation;

test("our nodes' CUDA code, emulated on the CPU, passes the fused nodes' tests", { skip: !emulated && 'a CUDA build runs these tests on the GPU' }, () => {
  // a test runner's child is told so (NODE_TEST_CONTEXT) and would run no files of its own
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const run = spawnSync(
    process.execPath,
    ['--test', '--test-concurrency=1', '--test-name-pattern', FUSED_TEST_PATTERN, ...FUSED_TEST_FILES.map((f) => join(here, f))],
    { env: { ...env, RRR_EMULATE_CUDA: '1', RRR_TEST_DEVICE: 'cpu' }, encoding: 'utf8', timeout: 900_000, maxBuffer: 64 << 20 },
  );
  const out = `${run.stdout}\n${run.stderr}`;
  const count = (what: string) => Number(out.match(new RegExp(`^# ${what} (\\d+)$`, 'm'))?.[1] ?? NaN);
  const failed = out.split('\n').filter((l) => /^\s*not ok|emulated CUDA/.test(l));
  assert.equal(run.status, 0, `the emulated run failed:\n${failed.join('\n')}\n${out.slice(-3000)}`);
  assert.match(out, /our nodes run their CUDA code on the CPU, emulated/, 'no node ran emulated');
  assert.ok(count('pass') >= 14, `${count('pass')} of the fused nodes' tests passed`);
  assert.equal(count('fail'), 0);
});

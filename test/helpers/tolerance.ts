// How closely two correct computations of one model agree depends on the device. On the CPU,
// f32 stays f32, so our engine and libllama (and two batch shapes of ours) agree to ~1e-4 and
// the tests demand exact greedy tokens. ggml-cuda picks its matmul kernel by batch size: small
// f32 batches run on TF32 tensor cores (10-bit mantissa), f16 GEMMs accumulate in f16 and
// quantised ones quantise the activations. Two correct paths with other batch shapes then
// differ by ~2e-3 × max |logit| (f32, f16) and up to ~3e-2 × (4-bit), as measured on an H100
// (scripts/device/gpu-check.sh, 2026-11-26), and greedy decoding may part at a near-tie.
import assert from 'node:assert/strict';
import type { Model } from '../../src/engine/index.js';
import { logitsRow } from '../../src/engine/index.js';
import { TEST_DEVICE } from './models.js';

// RRR_TEST_TOL=gpu applies the GPU rules on the CPU too: a dry run of the GPU branches here.
export const ON_GPU = TEST_DEVICE === 'cuda' || process.env.RRR_TEST_TOL === 'gpu';

/** Absolute logit gap counted as a near-tie on a GPU (tiny test models: max |logit| ≈ 10). */
export const NEAR_TIE = 0.06;

/** The CPU tolerance, or the GPU one when the tests run on CUDA. */
export function deviceTol(cpu: number, gpu: number): number {
  return ON_GPU ? gpu : cpu;
}

/** Relative logit tolerance (× max(1, max |logit|)) between two kernel paths, by weight type. */
export function logitTol(weightType: string): number {
  const quantised = !['f32', 'f16', 'bf16'].includes(weightType);
  if (ON_GPU) return quantised ? 6e-2 : 6e-3;
  // 4-bit types quantise activations too (q8_K blocks), so a 1e-7 upstream difference in
  // attention summation order can flip one rounding step and move a logit by ~0.5%.
  return weightType === 'q4_0' || weightType === 'q4_K' ? 1e-2 : 2e-3;
}

/**
 * `b`'s argmax is `a`'s, or on a GPU a near-tie: `b` at `a`'s argmax within `tol` of its max.
 */
export function assertSameArgmax(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  let ia = 0, ib = 0;
  for (let i = 1; i < a.length; i++) {
    if (a[i]! > a[ia]!) ia = i;
    if (b[i]! > b[ib]!) ib = i;
  }
  if (ia === ib) return;
  assert.ok(ON_GPU && b[ib]! - b[ia]! <= tol, `${what}: argmax ${ia} vs ${ib} (gap ${b[ib]! - b[ia]!})`);
}

/**
 * Two greedy decodings of the same prompt agree. On the CPU: token for token. On a GPU they may
 * part at a near-tie, so each must pick, at every step, a token within `tol` of the best logit
 * of our forward pass over its own text (so it is greedy up to rounding), and they must agree up
 * to the first step where that forward pass has a near-tie.
 */
export async function assertGreedyAgree(model: Model, prompt: Int32Array, a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string) {
  if (!ON_GPU) {
    assert.deepEqual(Array.from(a), Array.from(b), what);
    return;
  }
  const near = async (toks: ArrayLike<number>): Promise<boolean[]> => {
    const l = await model.forward([Int32Array.from([...prompt, ...Array.from(toks)])]);
    const ties: boolean[] = [];
    for (let t = 0; t < toks.length; t++) {
      const row = logitsRow(l, prompt.length - 1 + t);
      let best = -Infinity, second = -Infinity;
      for (const v of row) {
        if (v > best) { second = best; best = v; } else if (v > second) second = v;
      }
      const picked = row[toks[t]!]!;
      assert.ok(picked >= best - tol, `${what}: step ${t} picked a logit ${best - picked} below the best`);
      ties.push(best - second <= tol);
    }
    return ties;
  };
  const tiesA = await near(a);
  const tiesB = await near(b);
  const n = Math.min(a.length, b.length);
  let part = 0;
  while (part < n && a[part] === b[part]) part++;
  if (part === n && a.length === b.length) return;
  // Parted at `part` (or one stopped there): a near-tie must come at or before it.
  const tie = (ties: boolean[]) => ties.slice(0, part + 1).some((x) => x);
  assert.ok(tie(tiesA) || tie(tiesB), `${what}: the decodings part at step ${part} with no near-tie before`);
}

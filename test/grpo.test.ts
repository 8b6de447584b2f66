import { test } from 'node:test';
import assert from 'node:assert/strict';
import { groupAdvantages } from '../src/grpo/advantages.js';
import { packRows, reflectionWeights } from '../src/grpo/weights.js';
import { learningRate } from '../src/grpo/schedule.js';
import type { LrSchedule } from '../src/grpo/types.js';
import { ConfigError, DEFAULT_GRPO_CONFIG, resolveGrpoConfig } from '../src/grpo/config.js';

function close(actual: readonly number[], expected: readonly number[], tol = 1e-9): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => assert.ok(Math.abs(a - (expected[i] as number)) <= tol, `[${i}] ${a} vs ${expected[i]}`));
}

// ---- advantages ---------------------------------------------------------------------------

test('advantages, rewards [1,0,0,0]: mean 1/4, sample std 1/2 → [1.5, -0.5, -0.5, -0.5]', () => {
  // deviations 3/4, -1/4 ×3; Σ squares = 9/16 + 3/16 = 3/4; /(G-1)=3 → 1/4; sqrt → 1/2
  const r = groupAdvantages([1, 0, 0, 0], 0);
  assert.equal(r.mean, 0.25);
  assert.equal(r.std, 0.5);
  assert.deepEqual(r.advantages, [1.5, -0.5, -0.5, -0.5]);
  assert.equal(r.skipped, false);
  // with the default ε = 1e-6 the values move by about ε relative
  close(groupAdvantages([1, 0, 0, 0]).advantages, [1.5 / (1 + 2e-6), -0.5 / (1 + 2e-6), -0.5 / (1 + 2e-6), -0.5 / (1 + 2e-6)], 1e-12);
  close(groupAdvantages([1, 0, 0, 0]).advantages, [1.5, -0.5, -0.5, -0.5], 1e-5);
});

test('advantages, population std: [1,0,0,0] → [√3, -1/√3, -1/√3, -1/√3]', () => {
  // Σ squares 3/4, /G=4 → 3/16, sqrt → √3/4; 0.75/(√3/4) = √3, -0.25/(√3/4) = -1/√3
  const r = groupAdvantages([1, 0, 0, 0], 0, { std: 'population' });
  close([r.std], [Math.sqrt(3) / 4]);
  close(r.advantages, [Math.sqrt(3), -1 / Math.sqrt(3), -1 / Math.sqrt(3), -1 / Math.sqrt(3)]);
});

test('advantages, more hand-computed groups', () => {
  // [1,1,0,0]: mean 1/2, Σ squares 1, /3 → std 1/√3; ±(1/2)·√3 = ±0.8660254
  close(groupAdvantages([1, 1, 0, 0], 0).advantages, [0.8660254037844386, 0.8660254037844386, -0.8660254037844386, -0.8660254037844386]);
  // [0,1]: mean 1/2, Σ squares 1/2, /1 → std 1/√2; ±(1/2)·√2 = ±0.7071068
  close(groupAdvantages([0, 1], 0).advantages, [-0.7071067811865476, 0.7071067811865476]);
  // G = 8, one success: mean 1/8, Σ squares 49/64 + 7/64 = 7/8, /7 → 1/8, std 1/√8
  // A = (7/8)·√8 = 7/√8 = 2.4748737, others -(1/8)·√8 = -1/√8 = -0.3535534
  const a8 = groupAdvantages([0, 0, 0, 1, 0, 0, 0, 0], 0).advantages;
  close(a8, [-0.3535533905932738, -0.3535533905932738, -0.3535533905932738, 2.4748737341529163, -0.3535533905932738, -0.3535533905932738, -0.3535533905932738, -0.3535533905932738]);
  // advantages of a group sum to zero
  close([a8.reduce((s, x) => s + x, 0)], [0], 1e-12);
});

test('advantages: zero-variance groups are skipped with all-zero advantages', () => {
  for (const rewards of [[0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [1], [0.5, 0.5]]) {
    const r = groupAdvantages(rewards);
    assert.equal(r.skipped, true, JSON.stringify(rewards));
    assert.deepEqual(r.advantages, rewards.map(() => 0));
    assert.equal(r.std, 0);
  }
  assert.equal(groupAdvantages([0, 0, 0, 1e-9]).skipped, false);
});

test('advantages: bad input throws', () => {
  assert.throws(() => groupAdvantages([]), /empty group/);
  assert.throws(() => groupAdvantages([1, Number.NaN]), /finite/);
  assert.throws(() => groupAdvantages([1, 0], -1), /eps/);
});

// ---- weights ----------------------------------------------------------------------------------

test('weights are A_i on exactly the reflection tokens and 0 elsewhere; Σm counts them', () => {
  const w = reflectionWeights([10, 6, 4], [{ start: 3, end: 7 }, { start: 0, end: 6 }, { start: 2, end: 2 }], [1.5, -0.5, 0.25]);
  assert.deepEqual([...(w.weights[0] as Float32Array)], [0, 0, 0, 1.5, 1.5, 1.5, 1.5, 0, 0, 0]);
  assert.deepEqual([...(w.weights[1] as Float32Array)], [-0.5, -0.5, -0.5, -0.5, -0.5, -0.5]);
  assert.deepEqual([...(w.weights[2] as Float32Array)], [0, 0, 0, 0]);
  assert.deepEqual([...(w.masks[0] as Uint8Array)], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]);
  assert.deepEqual([...(w.masks[1] as Uint8Array)], [1, 1, 1, 1, 1, 1]);
  assert.deepEqual([...(w.masks[2] as Uint8Array)], [0, 0, 0, 0]);
  assert.equal(w.maskSum, 10);
  assert.ok(w.weights[0] instanceof Float32Array);
  // the stored value is the float32 rounding of A
  const odd = reflectionWeights([3], [{ start: 1, end: 2 }], [0.1]);
  assert.equal(odd.weights[0]?.[1], Math.fround(0.1));
});

test('weights: spans outside the sequence and mismatched inputs are refused', () => {
  assert.throws(() => reflectionWeights([5], [{ start: 2, end: 6 }], [1]), /span \[2, 6\) is not inside \[0, 5\)/);
  assert.throws(() => reflectionWeights([5], [{ start: 3, end: 2 }], [1]), /span/);
  assert.throws(() => reflectionWeights([5], [{ start: -1, end: 2 }], [1]), /span/);
  assert.throws(() => reflectionWeights([5, 5], [{ start: 0, end: 1 }], [1, 1]), /2 sequences, 1 spans, 2 advantages/);
  assert.throws(() => reflectionWeights([5], [{ start: 0, end: 1 }], [Number.NaN]), /not finite/);
});

test('packRows pads rows with zeros into one row-major buffer', () => {
  const packed = packRows([Float32Array.of(1, 2), Float32Array.of(3, 4, 5)], 4);
  assert.deepEqual([...packed], [1, 2, 0, 0, 3, 4, 5, 0]);
  assert.throws(() => packRows([Float32Array.of(1, 2, 3)], 2), /row 0 has 3 tokens, more than 2/);
});

// ---- schedule ------------------------------------------------------------------------------

test('cosine schedule with warm-up: values at specific steps', () => {
  const s: LrSchedule = { kind: 'cosine', baseLr: 1, warmupSteps: 2, totalSteps: 10, minLrRatio: 0 };
  // warm-up (step+1)/W; then p = (step-2)/8, lr = ½(1+cos πp)
  close([0, 1, 2, 4, 6, 8, 10, 50].map((k) => learningRate(k, s)), [0.5, 1, 1, 0.5 * (1 + Math.SQRT1_2), 0.5, 0.5 * (1 - Math.SQRT1_2), 0, 0]);
  const withMin = { ...s, baseLr: 2e-4, minLrRatio: 0.1 };
  // step 6: p = 1/2 → 2e-4·(0.1 + 0.9·0.5) = 1.1e-4; step 10: 2e-5
  close([learningRate(6, withMin), learningRate(10, withMin), learningRate(0, withMin)], [1.1e-4, 2e-5, 1e-4], 1e-15);
  // no warm-up: the first step runs at the base rate
  assert.equal(learningRate(0, { ...s, warmupSteps: 0 }), 1);
});

test('constant schedule, with and without warm-up', () => {
  const s: LrSchedule = { kind: 'constant', baseLr: 3e-5, warmupSteps: 3, totalSteps: 10, minLrRatio: 0.5 };
  close([0, 1, 2, 3, 9, 100].map((k) => learningRate(k, s)), [1e-5, 2e-5, 3e-5, 3e-5, 3e-5, 3e-5], 1e-18);
  assert.equal(learningRate(0, { ...s, warmupSteps: 0 }), 3e-5);
});

test('schedule: bad settings are refused', () => {
  const s: LrSchedule = { kind: 'cosine', baseLr: 1, warmupSteps: 2, totalSteps: 10, minLrRatio: 0 };
  assert.throws(() => learningRate(-1, s), /step must be an integer/);
  assert.throws(() => learningRate(0, { ...s, warmupSteps: 11 }), /warm-up steps must be an integer in \[0, 10\]/);
  assert.throws(() => learningRate(0, { ...s, minLrRatio: 1.5 }), /minimum learning-rate ratio/);
  assert.throws(() => learningRate(0, { ...s, baseLr: 0 }), /learning rate must be > 0/);
  assert.throws(() => learningRate(0, { ...s, totalSteps: 0 }), /total steps/);
  assert.throws(() => learningRate(0, { ...s, kind: 'linear' as 'cosine' }), /schedule kind/);
});

// ---- config -------------------------------------------------------------------------------------

test('config: defaults, overrides, undefined values ignored', () => {
  const c = resolveGrpoConfig();
  assert.deepEqual(c, { ...DEFAULT_GRPO_CONFIG });
  assert.equal(c.groupSize, 8);
  assert.equal(c.temperature, 1.0);
  assert.equal(c.clipEpsilon, 0.2);
  assert.equal(c.beta, 0);
  assert.equal(c.advantageStd, 'sample');
  const o = resolveGrpoConfig({ groupSize: 4, beta: 0.04, learningRate: undefined });
  assert.equal(o.groupSize, 4);
  assert.equal(o.beta, 0.04);
  assert.equal(o.learningRate, DEFAULT_GRPO_CONFIG.learningRate);
  assert.throws(() => {
    (DEFAULT_GRPO_CONFIG as { groupSize: number }).groupSize = 2;
  }, TypeError);
});

test('config: each bad value gives a one-line error naming the flag', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ groupSize: 1 }, '--group-size: must be an integer in [2, 1024] (got 1)'],
    [{ groupSize: 2.5 }, '--group-size: must be an integer in [2, 1024] (got 2.5)'],
    [{ temperature: 0 }, '--temperature: must be a number in [0.001, 100] (at 0 every reflection of a group is the same) (got 0)'],
    [{ temperature: 1e300 }, '--temperature: must be a number in [0.001, 100] (at 0 every reflection of a group is the same) (got 1e+300)'],
    [{ retryTemperature: -1 }, '--retry-temperature: must be a number in [0, 100] (0 = greedy) (got -1)'],
    [{ clipEpsilon: 1 }, '--clip-epsilon: must be a number in (0, 1) (got 1)'],
    [{ beta: Number.NaN }, '--beta: must be a number ≥ 0 (got NaN)'],
    [{ learningRate: '1e-4' }, '--lr: must be a number in (0, 1] (got "1e-4")'],
    [{ lrSchedule: 'linear' }, '--lr-schedule: must be one of "cosine", "constant" (got "linear")'],
    [{ warmupSteps: -3 }, `--warmup-steps: must be an integer in [0, ${Number.MAX_SAFE_INTEGER}] (got -3)`],
    [{ minLrRatio: 2 }, '--min-lr-ratio: must be a number in [0, 1] (got 2)'],
    [{ advantageStd: 'biased' }, '--advantage-std: must be one of "sample", "population" (got "biased")'],
    [{ maxGradNorm: -1 }, '--max-grad-norm: must be a number ≥ 0 (0 = no clipping) (got -1)'],
    [{ passesPerBatch: 0 }, '--passes-per-batch: must be an integer in [1, 64] (got 0)'],
    [{ groupSiz: 4 }, 'unknown GRPO setting "groupSiz"'],
  ];
  for (const [over, msg] of cases) {
    assert.throws(
      () => resolveGrpoConfig(over),
      (err: unknown) => err instanceof ConfigError && err.message === msg && !err.message.includes('\n'),
      msg,
    );
  }
  assert.throws(
    () => resolveGrpoConfig({ beta: -1 }),
    (err: unknown) => err instanceof ConfigError && err.flag === '--beta',
  );
});

// Sampling inside the decode graph (deviceSampling) against the host sampler: greedy is the
// same token for token (and libllama's), temperature draws use the same random numbers and
// differ only where float rounding moves a CDF boundary, and modes the graph cannot reproduce
// fall back to the host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, Model, ReferenceDecoder, logitsRow } from '../src/engine/index.js';
import type { Completion, GenerateOptions, GenerateRequest } from '../src/engine/types.js';
import { TEST_DEVICE, tinyModel } from './helpers/models.js';
import { deviceTol } from './helpers/tolerance.js';

const TEXTS = ['Use 3, 5 and 7 to make 22. Show the expression.', 'The quick brown fox jumps over', 'Hi'];

async function run(model: Model, deviceSampling: boolean, requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
  const maxSeqs = requests.reduce((n, r) => n + (r.n ?? 1), 0);
  const gen = await Generator.create(model, { maxSeqs, nCtx: 64, kvType: 'f32', deviceSampling });
  try {
    assert.equal(gen.info.deviceSampling, deviceSampling);
    return await gen.generate(requests, opts);
  } finally {
    gen.dispose();
  }
}

async function withModel(fn: (m: Model, path: string) => Promise<void>): Promise<void> {
  const path = await tinyModel({ arch: 'qwen2' });
  const m = await Model.load(path, { device: TEST_DEVICE });
  try {
    await fn(m, path);
  } finally {
    m.dispose();
  }
}

test('device sampling is off by default on CPU', { skip: TEST_DEVICE !== 'cpu' && 'CPU default only' }, async () => {
  await withModel(async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 1, nCtx: 16 });
    assert.equal(gen.info.deviceSampling, false);
    gen.dispose();
  });
});

test('greedy in the graph: same tokens as the host sampler and libllama, same log-probs', async () => {
  await withModel(async (model, path) => {
    const requests = TEXTS.map((t, i) => ({ prompt: model.tokenize(t), n: i + 1 }));
    const opts = { maxTokens: 24, temperature: 0 };
    const host = await run(model, false, requests, opts);
    const dev = await run(model, true, requests, opts);
    const ref = await ReferenceDecoder.load(path, { f32Kv: true });
    const theirs = await ref.greedy(requests, { maxTokens: 24 });
    ref.dispose();
    for (let g = 0; g < requests.length; g++) {
      for (let j = 0; j < requests[g]!.n; j++) {
        const a = host[g]![j]!, b = dev[g]![j]!;
        assert.deepEqual(Array.from(b.tokens), Array.from(a.tokens), `request ${g} sample ${j}`);
        assert.deepEqual(Array.from(b.tokens), Array.from(theirs.tokens[g]![j]!), `request ${g} sample ${j} vs libllama`);
        assert.equal(b.text, a.text);
        assert.equal(b.finishReason, a.finishReason);
        for (let t = 0; t < a.tokens.length; t++) assert.ok(Math.abs(a.logprobs[t]! - b.logprobs[t]!) < 1e-4, `log-prob ${t}`);
      }
    }
  });
});

// Probability (at temperature T) of the ids strictly between a and b in id order: what a
// rounding difference in the running sum can skip.
function massBetween(row: Float32Array, T: number, a: number, b: number): number {
  let mx = -Infinity;
  for (const v of row) mx = Math.max(mx, v);
  let z = 0;
  for (const v of row) z += Math.exp((v - mx) / T);
  let between = 0;
  for (let i = Math.min(a, b) + 1; i < Math.max(a, b); i++) between += Math.exp((row[i]! - mx) / T);
  return between / z;
}

for (const T of [0.7, 1.0, 1.5]) {
  test(`temperature ${T} in the graph: the host's draws up to rounding, reproducible, model log-probs`, async () => {
    await withModel(async (model) => {
      const prompt = model.tokenize(TEXTS[1]!);
      const requests = [{ prompt, n: 48 }];
      // Two tokens: the first comes from the prompt's row (always host-sampled), the second is
      // the first draw of a decode step, made with the same uniform on both paths.
      const opts = { maxTokens: 2, temperature: T, seed: 11, ignoreEos: true };
      const [host] = (await run(model, false, requests, opts)) as [Completion[]];
      const [dev] = (await run(model, true, requests, opts)) as [Completion[]];
      const [again] = (await run(model, true, requests, opts)) as [Completion[]];
      assert.deepEqual(again.map((c) => Array.from(c.tokens)), dev.map((c) => Array.from(c.tokens)), 'same seed, same tokens');

      let same = 0;
      for (let j = 0; j < dev.length; j++) {
        const a = host[j]!, b = dev[j]!;
        assert.equal(b.tokens[0], a.tokens[0], `sample ${j}: first token comes from the host on both paths`);
        const l = await model.forward([Int32Array.from([...prompt, b.tokens[0]!])]);
        const row = logitsRow(l, prompt.length);
        let mx = -Infinity;
        for (const v of row) mx = Math.max(mx, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - mx);
        const want = row[b.tokens[1]!]! - mx - Math.log(z);
        assert.ok(Math.abs(b.logprobs[1]! - want) < deviceTol(1e-3, 2e-2), `sample ${j}: log-prob ${b.logprobs[1]} vs the model's ${want}`);
        if (a.tokens[1] === b.tokens[1]) {
          ++same;
        } else {
          const skipped = massBetween(row, T, a.tokens[1]!, b.tokens[1]!);
          assert.ok(skipped < 1e-3, `sample ${j}: host ${a.tokens[1]}, device ${b.tokens[1]} lie ${skipped} of the mass apart`);
        }
      }
      assert.ok(same >= dev.length / 2, `only ${same} of ${dev.length} draws agree`);
    });
  });
}

test('top-k, top-p, min-p and repetition penalty stay on the host: identical tokens either way', async () => {
  await withModel(async (model) => {
    const requests = TEXTS.map((t) => ({ prompt: model.tokenize(t), n: 2 }));
    for (const extra of [{ topK: 40 }, { topP: 0.9 }, { minP: 0.05 }, { repeatPenalty: 1.3 }]) {
      const opts = { maxTokens: 12, temperature: 0.9, seed: 5, ...extra };
      const a = await run(model, false, requests, opts);
      const b = await run(model, true, requests, opts);
      assert.deepEqual(b.map((g) => g.map((c) => Array.from(c.tokens))), a.map((g) => g.map((c) => Array.from(c.tokens))), JSON.stringify(extra));
    }
  });
});

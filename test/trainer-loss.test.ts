// The masked loss's edge cases: zero masks, masked-out tokens, ratios of 1, mismatched inputs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Model, Trainer } from '../src/engine/index.js';
import { deviceTol } from './helpers/tolerance.js';
import { ALL, tinyModel, randomizeB, seq, mixedBatch, assertSameGrads } from './helpers/trainer-fixtures.js';

describe('masked loss', () => {
  let model: Model;
  before(async () => {
    model = (await tinyModel('mask')).model;
  });
  after(() => model.dispose());

  test('an all-zero mask trains nothing: no update, no optimizer step', async () => {
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL] }, { lr: 1e-2, weightDecay: 0.1 });
    randomizeB(tr, 0.1);
    const before = tr.params();
    const tokens = seq(12, 3);
    const r = await tr.step([{ tokens, weights: new Float32Array(tokens.length) }], { lr: 0.1, beta: 0.5 });
    assert.equal(r.skipped, true);
    assert.equal(r.lossTokens, 0);
    assert.equal(r.loss, 0);
    assert.deepEqual(tr.params(), before);
    assert.equal(tr.info.steps, 0);
    tr.dispose();
  });

  test('masked-out sequences and tokens do not touch the gradient', async () => {
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL] }, { lr: 1e-2 });
    randomizeB(tr, 0.2);
    const batch = mixedBatch();
    const a = await tr.gradients(batch, {});
    const extra = seq(9, 1234);
    const b = await tr.gradients([...batch, { tokens: extra, weights: new Float32Array(extra.length) }], {});
    assert.equal(a.lossTokens, b.lossTokens);
    assertSameGrads(a.grads, b.grads, 1e-6);
    tr.dispose();
  });

  test('ratio is 1 when old log-probs come from the same weights, and the gradient is the plain policy gradient', async () => {
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL] }, { lr: 1e-2 });
    randomizeB(tr, 0.2);
    const batch = mixedBatch();
    const old = await tr.logprobs(batch.map((s) => s.tokens));
    const withOld = batch.map((s, i) => ({ ...s, oldLogprobs: old[i]! }));
    const r = await tr.gradients(withOld, {});
    // The log-prob pass and the training pass are different graphs: on a GPU their kernels round apart.
    assert.ok(Math.abs(r.meanRatio - 1) < deviceTol(1e-5, 1e-3), `mean ratio ${r.meanRatio}`);
    assert.equal(r.clipFraction, 0);
    const plain = await tr.gradients(batch, {});
    for (const [k, v] of Object.entries(plain.grads)) {
      for (let i = 0; i < v.length; i++) assert.ok(Math.abs(v[i]! - r.grads[k]![i]!) <= deviceTol(1e-4, 3e-3) * (1 + Math.abs(v[i]!)), k);
    }
    tr.dispose();
  });

  test('mismatched inputs are one-line errors', async () => {
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q'] }, { lr: 1e-2 });
    const tokens = seq(6, 1);
    await assert.rejects(tr.step([{ tokens, weights: new Float32Array(5) }], { lr: 1e-3 }), /sequence 0 has 6 tokens but 5 weights/);
    await assert.rejects(
      tr.step([{ tokens: Int32Array.from([1, 9999999]), weights: new Float32Array(2).fill(1) }], { lr: 1e-3 }),
      /outside the vocabulary/,
    );
    await assert.rejects(Trainer.create(model, { rank: 4, alpha: 8, targets: ['qq' as never] }, { lr: 1e-3 }), /unknown LoRA target 'qq'/);
    tr.dispose();
  });
});

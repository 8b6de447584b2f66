// Generation with a LoRA adapter: what the trainer teaches is what the generator samples, read
// live from the adapter as it trains, and switching the adapter off restores the base model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, Model, Trainer, logitsRow } from '../src/engine/index.js';
import { tinyModel, TEST_DEVICE } from './helpers/models.js';
import { deviceTol } from './helpers/tolerance.js';

test('greedy generation follows the adapter the trainer learned, and logprobs agree with forward', async () => {
  const model = await Model.load(await tinyModel({ arch: 'qwen2', type: 'f32' }), { device: TEST_DEVICE });
  const trainer = await Trainer.create(model, { rank: 8, alpha: 16, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], seed: 1 }, { lr: 1e-2 });
  const gen = await Generator.create(model, { maxSeqs: 2, nCtx: 128, kvType: 'f32' });
  try {
    const prompt = model.tokenize(model.applyChatTemplate([{ role: 'user', content: 'Say the magic words.' }]), { parseSpecial: true });
    const target = model.tokenize(' open sesame, little door');
    const opts = { maxTokens: target.length, temperature: 0, ignoreEos: true };
    const base = (await gen.generate([{ prompt }], opts))[0]![0]!;
    assert.notDeepEqual(Array.from(base.tokens), Array.from(target));

    const tokens = new Int32Array(prompt.length + target.length);
    tokens.set(prompt);
    tokens.set(target, prompt.length);
    const weights = new Float32Array(tokens.length).fill(1, prompt.length);
    gen.setAdapter(trainer);
    for (let i = 0; i < 40; i++) await trainer.step([{ tokens, weights }], { lr: 1e-2 });

    const tuned = (await gen.generate([{ prompt }], opts))[0]![0]!;
    assert.deepEqual(Array.from(tuned.tokens), Array.from(target), `got ${JSON.stringify(tuned.text)}`);

    // The sampled tokens' log-probs are the adapted model's (checked against forward with the adapter).
    const full = await model.forward([tokens], { adapter: trainer });
    for (let k = 0; k < target.length; k++) {
      const row = logitsRow(full, prompt.length - 1 + k);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      const lp = row[target[k]!]! - max - Math.log(sum);
      assert.ok(Math.abs(lp - tuned.logprobs[k]!) < deviceTol(1e-3, 2e-2), `token ${k}: ${lp} vs ${tuned.logprobs[k]}`);
    }

    gen.setAdapter(null);
    const again = (await gen.generate([{ prompt }], opts))[0]![0]!;
    assert.deepEqual(Array.from(again.tokens), Array.from(base.tokens));
  } finally {
    gen.dispose();
    trainer.dispose();
    model.dispose();
  }
});

test('an adapter of another model is refused', async () => {
  const a = await Model.load(await tinyModel({ arch: 'qwen2', type: 'f32' }), { device: TEST_DEVICE });
  const b = await Model.load(await tinyModel({ arch: 'qwen2', type: 'f32' }), { device: TEST_DEVICE });
  const trainer = await Trainer.create(a, { rank: 2, alpha: 4, targets: ['q'] }, { lr: 1e-3 });
  const gen = await Generator.create(b, { maxSeqs: 1, nCtx: 32 });
  try {
    assert.throws(() => gen.setAdapter(trainer), /setAdapter: the adapter was created for another model/);
  } finally {
    gen.dispose();
    trainer.dispose();
    a.dispose();
    b.dispose();
  }
});

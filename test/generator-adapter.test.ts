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

test('a cache smaller than a request grows to it up to maxCtx, keeping its adapter, with the tokens of a cache sized for it', async () => {
  const model = await Model.load(await tinyModel({ arch: 'qwen2', type: 'f32' }), { device: TEST_DEVICE });
  const trainer = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q', 'v', 'down'], seed: 2 }, { lr: 1e-2 });
  const small = await Generator.create(model, { maxSeqs: 2, nCtx: 256, maxCtx: 768, kvType: 'f32' });
  const sized = await Generator.create(model, { maxSeqs: 2, nCtx: 512, kvType: 'f32' });
  try {
    // B = 0 leaves a new adapter without effect: a few steps make it one that shows.
    const text = model.tokenize(' the quick brown fox jumps over the lazy dog'.repeat(4));
    for (let i = 0; i < 5; i++) await trainer.step([{ tokens: text, weights: new Float32Array(text.length).fill(1) }], { lr: 1e-2 });
    const prompt = model.tokenize(' one two three four five six seven eight nine ten'.repeat(30));
    assert.ok(prompt.length > 256 && prompt.length + 40 <= 512, `prompt of ${prompt.length} tokens`);
    const opts = { maxTokens: 40, temperature: 0.8, seed: 3, ignoreEos: true };
    small.setAdapter(trainer);
    sized.setAdapter(trainer);
    const grown = (await small.generate([{ prompt, n: 2 }], opts))[0]!;
    assert.equal(small.info.nCtx, 512);
    const want = (await sized.generate([{ prompt, n: 2 }], opts))[0]!;
    assert.deepEqual(grown.map((c) => Array.from(c.tokens)), want.map((c) => Array.from(c.tokens)));
    sized.setAdapter(null);
    const base = (await sized.generate([{ prompt, n: 2 }], opts))[0]!;
    assert.notDeepEqual(base.map((c) => Array.from(c.tokens)), want.map((c) => Array.from(c.tokens)), 'the adapter changes the tokens');
    // Past maxCtx the request is refused before anything runs, naming that limit.
    const long = model.tokenize(' one two three four five six seven eight nine ten'.repeat(80));
    await assert.rejects(small.generate([{ prompt: long }], opts), /^RrrError: context overflow: request 0 has a \d+-token prompt \+ maxTokens 40 = \d+ > maxCtx 768$/);
    assert.equal(small.info.nCtx, 512);
    await assert.rejects(Generator.create(model, { maxSeqs: 1, nCtx: 256, maxCtx: 128 }), /maxCtx: 128 is below nCtx 256/);
    await assert.rejects(Generator.create(model, { maxSeqs: 1, nCtx: 256, maxCtx: 2 ** 20 }), /maxCtx: 1048576 is above the model's context of \d+ tokens/);

    // One call grows to its longest request, not to the first one too long (a second was still refused).
    const multi = await Generator.create(model, { maxSeqs: 2, nCtx: 256, maxCtx: 1024, kvType: 'f32' });
    try {
      const longer = model.tokenize(' one two three four five six seven eight nine ten'.repeat(60));
      assert.ok(longer.length > 512 && longer.length + 8 <= 768, `prompt of ${longer.length} tokens`);
      const r = await multi.generate([{ prompt }, { prompt: longer }], { maxTokens: 8, temperature: 0 });
      assert.equal(r.length, 2);
      assert.equal(multi.info.nCtx, 768);
      // A call in flight keeps the cache it started on while another grows it, and stops on request.
      const many = Array.from({ length: 6 }, () => ({ prompt: text }));
      const small = await Generator.create(model, { maxSeqs: 1, nCtx: 256, maxCtx: 1024, kvType: 'f32' });
      try {
        const inFlight = small.generate(many, { maxTokens: 30, temperature: 0 });
        const grows = small.generate([{ prompt: longer }], { maxTokens: 8, temperature: 0 });
        assert.deepEqual((await inFlight).map((c) => c.length), [1, 1, 1, 1, 1, 1]);
        await grows;
        assert.equal(small.info.nCtx, 768);
      } finally {
        small.dispose();
      }
    } finally {
      multi.dispose();
    }
  } finally {
    small.dispose();
    sized.dispose();
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

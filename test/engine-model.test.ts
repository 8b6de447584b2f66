// Tokenizer, chat template, model info and the asynchronous contract of the Model wrapper.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Model, argmax, logitsRow, makeTinyModel, defaultVocabPath } from '../src/engine/index.js';
import { tinyModel, testDir, TEST_DEVICE } from './helpers/models.js';

test('hyper-parameters are read back as written', async () => {
  const m = await Model.load(await tinyModel({ arch: 'qwen3', headDim: 32, nLayer: 3 }), { device: TEST_DEVICE });
  try {
    assert.equal(m.info.arch, 'qwen3');
    assert.equal(m.info.nLayer, 3);
    assert.equal(m.info.nEmbd, 64);
    assert.equal(m.info.headDim, 32);
    assert.equal(m.info.nHead, 4);
    assert.equal(m.info.nHeadKv, 2);
    assert.equal(m.info.nVocab, 151936);
    assert.equal(m.info.tiedEmbeddings, false);
    assert.equal(m.info.weightType, 'f32');
    if (TEST_DEVICE === 'cpu') assert.equal(m.info.device, 'CPU');
    else assert.equal(m.info.gpu, true);
  } finally {
    m.dispose();
  }
});

test('tokenize / detokenize round trip and special tokens', async () => {
  const m = await Model.load(await tinyModel(), { device: TEST_DEVICE });
  try {
    const text = 'Reflect, Retry, Reward: 3 + 5 × 7 = 38 ✓';
    const t = m.tokenize(text);
    assert.ok(t.length > 5 && t.length < text.length);
    assert.equal(m.detokenize(t), text);
    const plain = m.tokenize('<|im_end|>');
    const special = m.tokenize('<|im_end|>', { parseSpecial: true });
    assert.equal(special.length, 1);
    assert.ok(plain.length > 1);
    assert.ok(m.isEndOfGeneration(special[0]!));
    assert.equal(m.tokenPiece(special[0]!, { renderSpecial: true }), '<|im_end|>');
  } finally {
    m.dispose();
  }
});

test('tokenCounts counts as tokenize does, for many texts at once', async () => {
  const m = await Model.load(await tinyModel(), { device: TEST_DEVICE, threads: 2 });
  try {
    const texts = ['', 'a', '<|im_start|>user\nhi<|im_end|>', 'Reflect, Retry, Reward ✓ '.repeat(40), ...Array.from({ length: 50 }, (_, i) => `item ${i}: ${'x'.repeat(i)}`)];
    for (const parseSpecial of [false, true]) {
      const counts = await m.tokenCounts(texts, { parseSpecial });
      assert.deepEqual([...counts], texts.map((t) => m.tokenize(t, { parseSpecial }).length));
    }
    await assert.rejects(m.tokenCounts([1 as unknown as string]), /tokenCounts: text 0 is not a string/);
  } finally {
    m.dispose();
  }
});

test('chat template from the model', async () => {
  const m = await Model.load(await tinyModel(), { device: TEST_DEVICE });
  try {
    assert.equal(m.info.chatTemplateSource, 'model');
    assert.ok(m.chatTemplate && m.chatTemplate.includes('im_start'));
    const s = m.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ]);
    assert.equal(s, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    const noAsst = m.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addAssistant: false });
    assert.ok(!noAsst.endsWith('assistant\n'));
  } finally {
    m.dispose();
  }
});

test('a model without a chat template falls back to chatml', async () => {
  const out = join(testDir(), 'llama-bpe.gguf');
  await makeTinyModel({ arch: 'llama', out, vocab: defaultVocabPath().replace('qwen2', 'llama-bpe') });
  const m = await Model.load(out, { device: TEST_DEVICE });
  try {
    assert.equal(m.chatTemplate, null);
    assert.equal(m.info.chatTemplateSource, 'chatml');
    assert.equal(m.info.nVocab, 128256);
    assert.match(m.applyChatTemplate([{ role: 'user', content: 'Hi' }]), /^<\|im_start\|>user\nHi<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  } finally {
    m.dispose();
  }
});

test('forward runs off the JS thread', async () => {
  const m = await Model.load(await tinyModel({ nLayer: 4 }), { device: TEST_DEVICE });
  try {
    const seqs = Array.from({ length: 4 }, (_, i) => new Int32Array(256).map((_, j) => (i * 7919 + j * 31) % 150000));
    const pending = m.forward(seqs, { lastOnly: true });
    // If forward ran on this thread it would already be settled and win the race.
    const first = await Promise.race([pending.then(() => 'forward'), new Promise((r) => setImmediate(() => r('event loop')))]);
    assert.equal(first, 'event loop');
    const out = await pending;
    assert.deepEqual(out.rowStart, [0, 1, 2, 3, 4]);
  } finally {
    m.dispose();
  }
});

test('same seed, same weights; another seed, other weights', async () => {
  const a = join(testDir(), 'seed-a.gguf');
  const b = join(testDir(), 'seed-b.gguf');
  const c = join(testDir(), 'seed-c.gguf');
  await makeTinyModel({ out: a, seed: 1 });
  await makeTinyModel({ out: b, seed: 1 });
  await makeTinyModel({ out: c, seed: 2 });
  const [ma, mb, mc] = await Promise.all([a, b, c].map((p) => Model.load(p, { device: TEST_DEVICE })));
  try {
    const t = [ma!.tokenize('seeded weights')];
    const [la, lb, lc] = await Promise.all([ma!.forward(t), mb!.forward(t), mc!.forward(t)]);
    assert.deepEqual(la!.logits, lb!.logits);
    assert.notDeepEqual(la!.logits.subarray(0, 100), lc!.logits.subarray(0, 100));
  } finally {
    [ma, mb, mc].forEach((m) => m!.dispose());
  }
});

test('an f32 embedding table holds the same draws as the f16 one, unrounded', async () => {
  const a = join(testDir(), 'embd-16.gguf');
  const b = join(testDir(), 'embd-32.gguf');
  await makeTinyModel({ out: a, seed: 3 });
  await makeTinyModel({ out: b, seed: 3, embdType: 'f32' });
  const [ma, mb] = await Promise.all([a, b].map((p) => Model.load(p, { device: TEST_DEVICE })));
  try {
    const t = [ma!.tokenize('the same draws')];
    const [la, lb] = await Promise.all([ma!.forward(t), mb!.forward(t)]);
    let worst = 0;
    for (let i = 0; i < la!.logits.length; i++) worst = Math.max(worst, Math.abs(la!.logits[i]! - lb!.logits[i]!));
    // f16 keeps 11 significant bits: logits of a few units move by about 1e-3, not more
    assert.ok(worst > 0 && worst < 0.05, `largest logit gap ${worst}`);
  } finally {
    [ma, mb].forEach((m) => m!.dispose());
  }
  await assert.rejects(makeTinyModel({ out: join(testDir(), 'embd-bad.gguf'), embdType: 'q8_0' as 'f32' }), /^RrrError: --embd-type: unknown type 'q8_0' \(expected f32, f16 or bf16\)$/m);
});

test('the copy initialisation predicts the token `copyOffset` positions back', async () => {
  const out = join(testDir(), 'copier.gguf');
  await makeTinyModel({ arch: 'qwen2', out, nHeadKv: 4, init: 'copy', copyOffset: 5 });
  const m = await Model.load(out, { device: TEST_DEVICE });
  try {
    const toks = m.tokenize(' one two three four five six seven eight nine ten eleven twelve');
    const l = await m.forward([toks]);
    for (let t = 5; t < toks.length; t++) assert.equal(argmax(logitsRow(l, t)), toks[t - 5], `position ${t}`);
  } finally {
    m.dispose();
  }
  await assert.rejects(makeTinyModel({ arch: 'qwen2', out, init: 'copy' }), /--init copy: needs --kv-heads equal to --heads/);
});

// Our forward graph must reproduce libllama's logits on every supported architecture and
// weight type: same argmax everywhere, tiny absolute differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Model, ReferenceModel, logitsRow } from '../src/engine/index.js';
import type { TinyModelOptions } from '../src/engine/types.js';
import { tinyModel, TEST_DEVICE } from './helpers/models.js';
import { assertSameArgmax, deviceTol, logitTol } from './helpers/tolerance.js';

const cases: { name: string; opts: Omit<TinyModelOptions, 'out'> }[] = [
  { name: 'qwen2 f32 (tied embeddings, qkv bias)', opts: { arch: 'qwen2', type: 'f32' } },
  { name: 'llama f32 (untied output)', opts: { arch: 'llama', type: 'f32' } },
  { name: 'qwen3 f32 (qk-norm, head dim != embd/heads)', opts: { arch: 'qwen3', type: 'f32', headDim: 32 } },
  { name: 'qwen2 f16', opts: { arch: 'qwen2', type: 'f16' } },
  { name: 'llama bf16', opts: { arch: 'llama', type: 'bf16' } },
  { name: 'qwen3 q8_0', opts: { arch: 'qwen3', type: 'q8_0' } },
  { name: 'llama q4_0', opts: { arch: 'llama', type: 'q4_0' } },
  { name: 'qwen2 q4_K', opts: { arch: 'qwen2', type: 'q4_K', nEmbd: 256, nFf: 512, nHead: 4, nHeadKv: 1 } },
];

const PROMPTS = [
  [{ role: 'user' as const, content: 'Use 3, 5 and 7 to make 22. Show the expression.' }],
  [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: 'Say hi.' }],
];

for (const c of cases) {
  test(`parity with libllama: ${c.name}`, async () => {
    const path = await tinyModel(c.opts);
    const model = await Model.load(path, { device: TEST_DEVICE });
    // repack off: llama.cpp's repacked q4 kernels round activations differently (checked below).
    const ref = await ReferenceModel.load(path, { nCtx: 128, repack: false, gpu: TEST_DEVICE === 'cuda' });
    try {
      const seqs = PROMPTS.map((p) => model.tokenize(model.applyChatTemplate(p), { parseSpecial: true }));
      seqs.push(seqs[0]!.slice(0, 5)); // a short one packed beside long ones exercises the mask
      const ours = await model.forward(seqs);
      const theirs = await ref.logits(seqs);
      const tol = logitTol(c.opts.type ?? 'f32');
      assert.deepEqual(ours.rowStart, theirs.rowStart);
      assert.equal(ours.nVocab, model.info.nVocab);
      let maxDiff = 0;
      let maxAbs = 0;
      for (let r = 0; r < ours.rowStart.at(-1)!; r++) {
        const a = logitsRow(ours, r);
        const b = logitsRow(theirs, r);
        for (let i = 0; i < a.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
          maxAbs = Math.max(maxAbs, Math.abs(b[i]!));
        }
        assertSameArgmax(a, b, tol * Math.max(1, maxAbs), `row ${r}`);
      }
      assert.ok(maxAbs > 1, `logits should be spread out, max |logit| was ${maxAbs}`);
      assert.ok(maxDiff < tol * Math.max(1, maxAbs), `max abs diff ${maxDiff} (max |logit| ${maxAbs})`);

      // last-only mode returns exactly the last row of each sequence
      const last = await model.forward(seqs, { lastOnly: true });
      assert.deepEqual(last.rowStart, [0, 1, 2, 3]);
      for (let s = 0; s < seqs.length; s++) {
        const full = logitsRow(ours, ours.rowStart[s + 1]! - 1);
        const l = logitsRow(last, s);
        for (let i = 0; i < l.length; i += 997) assert.ok(Math.abs(full[i]! - l[i]!) < deviceTol(1e-3, 5e-2), `sequence ${s}, logit ${i}`);
      }
    } finally {
      model.dispose();
      ref.dispose();
    }
  });
}

test('a sequence alone and packed in a batch gives the same logits', async () => {
  const model = await Model.load(await tinyModel({ arch: 'llama' }), { device: TEST_DEVICE });
  try {
    const a = model.tokenize('The quick brown fox jumps over the lazy dog');
    const b = model.tokenize('Hello world, this is a second sequence of a different length.');
    const alone = await model.forward([b]);
    const packed = await model.forward([a, b]);
    const off = packed.rowStart[1]!;
    for (let r = 0; r < b.length; r++) {
      const x = logitsRow(alone, r);
      const y = logitsRow(packed, off + r);
      for (let i = 0; i < x.length; i += 101) assert.ok(Math.abs(x[i]! - y[i]!) < deviceTol(1e-3, 5e-2), `row ${r} col ${i}`);
    }
  } finally {
    model.dispose();
  }
});

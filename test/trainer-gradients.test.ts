// LoRA gradients against central finite differences (f32, f16, bf16 and quantized bases, KL and
// clipped ratios, loss scaling, dropout, recomputation).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NonFiniteGradientError, Trainer } from '../src/engine/index.js';
import { TEST_DEVICE } from './helpers/models.js';
import { deviceTol } from './helpers/tolerance.js';
import { ALL, tinyModel, rng, randomizeB, seq, mixedBatch, dot, shifted, assertSameGrads, checkGradients, checkCoordinates } from './helpers/trainer-fixtures.js';

describe('LoRA gradients match finite differences', () => {
  test('qwen2 (GQA, q/k/v bias, tied output): ± advantages, several LM-head chunks and micro-batches', async () => {
    const { model } = await tinyModel('grad-qwen2');
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    randomizeB(tr, 0.3);
    const opts = { logitsChunkRows: 4, microBatchTokens: 14 };
    await checkGradients(tr, mixedBatch(), opts);
    await checkCoordinates(tr, mixedBatch(), opts, [
      'blk.0.attn_q.weight.lora_a',
      'blk.1.attn_k.weight.lora_b',
      'blk.0.attn_output.weight.lora_a',
      'blk.1.ffn_gate.weight.lora_b',
      'blk.0.ffn_down.weight.lora_a',
    ]);
    tr.dispose();
    model.dispose();
  });

  test('with KL to the base model and clipped ratios against old log-probs', async () => {
    const { model } = await tinyModel('grad-kl');
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 4 }, { lr: 1e-3 });
    // A small adapter keeps lp near ref: e^(ref−lp) in the KL would otherwise amplify f32 rounding.
    randomizeB(tr, 0.05, 5);
    const batch = mixedBatch();
    const noise = rng(11);
    const lps = await tr.logprobs(batch.map((s) => s.tokens));
    batch.forEach((s, i) => (s.oldLogprobs = lps[i]!.map((x) => x + 0.3 * noise())));
    const opts = { beta: 0.5, clipEps: 0.2, logitsChunkRows: 5 };
    // Clipping makes the loss piecewise smooth: a smaller step keeps most ratios on their side of 1±ε.
    const g = await checkGradients(tr, batch, opts, { h: 3e-3 });
    assert.ok(g.kl > 0, 'KL to the base model should be positive with a non-zero adapter');
    assert.ok(g.clipFraction > 0 && g.clipFraction < 1, `some but not all ratios clipped (got ${g.clipFraction})`);
    tr.dispose();
    model.dispose();
  });

  test('qwen3 (qk-norm) and llama (untied output, normal rope) with KL', async () => {
    for (const arch of ['qwen3', 'llama'] as const) {
      const { model } = await tinyModel(`grad-${arch}`, { arch });
      const tr = await Trainer.create(model, { rank: 2, alpha: 4, targets: ['q', 'k', 'v', 'down'], seed: 6 }, { lr: 1e-3 });
      randomizeB(tr, 0.3, 8);
      await checkGradients(tr, mixedBatch(), { beta: 0.3 });
      tr.dispose();
      model.dispose();
    }
  });

  // Finite differences are too coarse here (the forward pass itself rounds activations to f16 for
  // these weight types), so the reference is the f32 model drawn from the same random values.
  test('f16, bf16 and q8_0 bases (transposed and dequantised frozen weights) agree with f32', async () => {
    const grads = async (type: string, how: 'path' | 'merged' | 'fused' = 'path') => {
      const { model } = await tinyModel(`grad-${type}`, { type });
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      randomizeB(tr, 0.3);
      const g = (await tr.gradients(mixedBatch(), { beta: 0.2, mergeAdapter: how === 'merged', fuseAdapter: how === 'fused' })).grads;
      tr.dispose();
      model.dispose();
      return g;
    };
    const ref = await grads('f32');
    const nr = Math.sqrt(dot(ref, ref));
    // Bounds from the weights' own rounding (measured: f16 cos 0.99999, bf16 0.9994, q8_0 0.9991,
    // norms within 0.1%, 1% and 4.3%). q8_0 stands for every quantized type: they share the
    // get_rows dequantisation path; coarser types differ from f32 as models, not as gradients.
    // Merged (mergeAdapter), the adapter is rounded into the weight's type (f16 for q8_0) as well
    // (measured: cos 0.999996, 0.9995 and 0.9988; norms within 0.05%, 0.5% and 2.8%). Fused
    // (fuseAdapter), B and s·A·x enter the forward product in the weight's type, A and da the
    // backward one in the transposed weight's (f16 for q8_0, whose forward keeps the adapter path)
    // (measured: cos 0.99999, 0.9996 and 0.9991; norms within 0.2%, 0.9% and 4.3%). On a GPU f16
    // products sum in f16 (an H200's f16 fused norm: 0.51% below f32's, where path and merged passed).
    for (const how of ['path', 'merged', 'fused'] as const) {
      for (const [type, minCos, normTol] of [['f16', 0.9999, deviceTol(0.005, 0.015)], ['bf16', 0.998, 0.02], ['q8_0', 0.998, 0.06]] as const) {
        const g = await grads(type, how);
        const ng = Math.sqrt(dot(g, g));
        const cos = dot(g, ref) / (ng * nr);
        assert.ok(cos > minCos, `${type} ${how}: cosine to the f32 gradient ${cos}`);
        assert.ok(Math.abs(ng / nr - 1) < normTol, `${type} ${how}: gradient norm ${ng} vs f32 ${nr}`);
      }
    }
  });

  // A mean over many tokens, or small advantages, make per-token gradients smaller than f16's
  // smallest normal number (6.1e-5), and 16-bit products round their inputs to f16: the backward
  // pass runs on the loss scaled by a power of two that brings the largest per-token coefficient
  // near 1. Weights of 1e-5 stand in for a mean over some 100,000 tokens (without the scale the
  // f16 gradient's cosine to the f32 one was 0.905 here).
  test('f16 and q8_0 bases keep their gradients when per-token weights are tiny (loss scaling)', async () => {
    const tiny = mixedBatch().map((s) => ({ ...s, weights: s.weights.map((w) => w * 1e-5) }));
    const grads = async (type: string, beta = 0) => {
      const { model } = await tinyModel(`grad-small-${type}`, { type });
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      randomizeB(tr, 0.3);
      const r = await tr.gradients(tiny, { beta });
      const full = await tr.gradients(mixedBatch(), { beta });
      tr.dispose();
      model.dispose();
      return { g: r.grads, norm: r.gradNorm, full: full.grads };
    };
    const ref = await grads('f32');
    const nr = Math.sqrt(dot(ref.g, ref.g));
    // Linear in the weights, and reported unscaled: 1e-5 of the full weights' gradient.
    const nf = Math.sqrt(dot(ref.full, ref.full));
    // On a GPU the two passes' other loss scales round differently in f16/TF32 sums (an H200: 2e-4).
    assert.ok(Math.abs(nr / (1e-5 * nf) - 1) < deviceTol(1e-4, 2e-3), `gradient norm ${nr} vs 1e-5 x ${nf}`);
    assert.ok(Math.abs(ref.norm / nr - 1) < 1e-4, `reported norm ${ref.norm} vs ${nr}`);
    for (const [type, minCos, normTol] of [['f16', 0.9999, 0.005], ['q8_0', 0.998, 0.06]] as const) {
      const { g } = await grads(type);
      const ng = Math.sqrt(dot(g, g));
      const cos = dot(g, ref.g) / (ng * nr);
      assert.ok(cos > minCos, `${type}: cosine to the f32 gradient ${cos}`);
      assert.ok(Math.abs(ng / nr - 1) < normTol, `${type}: gradient norm ${ng} vs f32 ${nr}`);
    }
  });

  // Ratios to old log-probs (or to the base model, with KL) can be far larger than the weights
  // say: where the scaled pass overflows f16, it runs again with the scale the coefficients
  // called for, below 1 if need be; where even the loss is not finite, the step fails in one line
  // and the adapter stays as it was.
  test('huge ratios to stale old log-probs: the pass runs again at a smaller loss scale; a non-finite loss fails without an update', async () => {
    const toks = [seq(12, 3), seq(12, 40)];
    const run = async (type: string) => {
      const { model } = await tinyModel(`grad-stale-${type}`, { type });
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      randomizeB(tr, 0.3);
      const lps = await tr.logprobs(toks);
      const stale = (k: number) => toks.map((t, b) => ({ tokens: t, weights: new Float32Array(t.length).fill(-1), oldLogprobs: lps[b]!.map((x) => x - k) }));
      // e^30: the negative advantage keeps the unclipped ρ·A branch, gradients near 1e14
      const r = await tr.gradients(stale(30), {});
      const before = tr.params();
      await assert.rejects(tr.step(stale(1000), { lr: 1e-3 }), (e: Error) => e instanceof NonFiniteGradientError && /^step: the gradient is not finite \(loss inf\): the adapter was not updated/.test(e.message));
      const after = tr.params();
      for (const k of Object.keys(before)) assert.deepEqual(after[k], before[k], `${type} ${k} unchanged`);
      tr.dispose();
      model.dispose();
      return r;
    };
    const ref = await run('f32');
    const f16 = await run('f16');
    assert.ok(Number.isFinite(f16.gradNorm) && f16.lossScale < 1, `f16: norm ${f16.gradNorm} at loss scale ${f16.lossScale}`);
    const cos = dot(f16.grads, ref.grads) / Math.sqrt(dot(f16.grads, f16.grads) * dot(ref.grads, ref.grads));
    assert.ok(cos > 0.9999, `f16 vs f32 cosine ${cos}`);
    assert.ok(Math.abs(f16.gradNorm / ref.gradNorm - 1) < 0.005, `f16 norm ${f16.gradNorm} vs f32 ${ref.gradNorm}`);
  });

  test('frozen weights transposed once and kept give the gradients of transposing them per step', async () => {
    for (const type of ['f32', 'f16', 'q8_0']) {
      const { model } = await tinyModel(`grad-kept-${type}`, { type });
      const run = async (transposedWeights: 'cache' | 'per-step' | 'auto') => {
        const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 }, { transposedWeights });
        randomizeB(tr, 0.3);
        const r = { bytes: tr.info.transposedWeightsBytes, g: await tr.gradients(mixedBatch(), { beta: 0.2, profile: true }) };
        tr.dispose();
        return r;
      };
      const perStep = await run('per-step');
      const kept = await run('cache');
      assert.equal(perStep.bytes, 0);
      // Seven projections per layer and the (tied) LM head, 2 or 4 bytes each.
      const c = model.info;
      const perLayer = c.nEmbd * (2 * c.nHead * c.headDim + 2 * c.nHeadKv * c.headDim + 3 * c.nFf);
      const elems = c.nLayer * perLayer + c.nVocab * c.nEmbd;
      assert.ok(kept.bytes >= elems * 2 && kept.bytes <= elems * 4 + 4096, `${type}: ${kept.bytes} bytes kept for ${elems} weights`);
      assertSameGrads(perStep.g.grads, kept.g.grads, deviceTol(0, 1e-6), type);
      assert.equal(kept.g.loss, perStep.g.loss);
      // Used, not only kept: the step no longer copies (or dequantises) each weight into Wᵀ; all
      // seven per layer and the LM head, but layer 0's q, k and v, whose dx nothing needs.
      const copies = (r: typeof kept) => r.g.profile!.filter((o) => ['CONT', 'CPY', 'GET_ROWS'].includes(o.op)).reduce((a, o) => a + o.count, 0);
      assert.ok(copies(kept) <= copies(perStep) - (7 * c.nLayer - 2), `${type}: ${copies(kept)} copies kept vs ${copies(perStep)} per step`);
      // Merged, a recomputed layer's backward transposes the merged weight its recomputation
      // made (per step) or merges the kept Wᵀ: the same numbers, but q8_0's, rounded to f16 once
      // per step and twice kept (dequantised to f16, then merged): on another batch 0 and at most
      // 4.7e-4 of 0.52. Without KL: with it, this test's huge e^(ref − lp) turns that rounding
      // into 8e-3 where its terms cancel.
      const merged = async (transposedWeights: 'cache' | 'per-step') => {
        const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 }, { transposedWeights });
        randomizeB(tr, 0.3);
        const g = await tr.gradients(mixedBatch(), { mergeAdapter: true });
        tr.dispose();
        return g;
      };
      assertSameGrads((await merged('per-step')).grads, (await merged('cache')).grads, type === 'q8_0' ? deviceTol(2e-3, 2e-2) : deviceTol(0, 1e-6), `${type} merged`);
      // Auto keeps them on the CPU where they are small beside RAM (these are), and never on a GPU.
      const auto = await run('auto');
      assert.equal(auto.bytes, model.info.gpu ? 0 : kept.bytes, `auto kept ${auto.bytes} bytes on ${TEST_DEVICE}`);
      model.dispose();
    }
    const { model } = await tinyModel('grad-kept-bad');
    await assert.rejects(Trainer.create(model, { rank: 4, alpha: 8, targets: ['q'] }, { lr: 1e-3 }, { transposedWeights: 'always' as never }), /transposedWeights: expected auto, cache or per-step, got 'always'/);
    await assert.rejects(Trainer.create(model, { rank: 4, alpha: 8, targets: ['q'] }, { lr: 1e-3 }, { flashAttn: 'yes' as never }), /flashAttn: expected true, false or undefined \(auto\)/);
    model.dispose();
  });

  test("many LM-head chunks in one pass stay within ggml's allocator (it aborted the process past 256 free blocks)", async () => {
    const { model } = await tinyModel('many-chunks');
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q', 'v'], seed: 3 }, { lr: 1e-3 });
    // 600 one-row chunks asked for: a real step.
    const tokens = seq(601, 5);
    const r = await tr.step([{ tokens, weights: new Float32Array(601).fill(1) }], { lr: 1e-3, logitsChunkRows: 1 });
    assert.ok(Number.isFinite(r.loss) && r.lossTokens === 600, `loss ${r.loss} over ${r.lossTokens} tokens`);
    // The default chunk (about 220 rows at this vocabulary) over 64 x 2048 rows: planned whole.
    const plan = await tr.plan(64, 2048);
    assert.ok(plan.deviceBytes + plan.cpuBytes > 0);
    tr.dispose();
    model.dispose();
  });

  test('a quantized model as deep as a real one (28 layers, q4_0) keeps its weights transposed and trains', async () => {
    // The graph that transposes them once has two leaves and up to four nodes a weight: sized for
    // nodes alone, ggml's scheduler aborted the process from 8 quantized layers on.
    const { model } = await tinyModel('deep-q4_0', { type: 'q4_0', nLayer: 28 });
    for (const transposedWeights of ['cache', 'per-step'] as const) {
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 }, { transposedWeights });
      assert.equal(tr.info.transposedWeightsBytes > 0, transposedWeights === 'cache', transposedWeights);
      const r = await tr.step(mixedBatch(), { lr: 1e-3 });
      assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.gradNorm) && r.gradNorm > 0, `${transposedWeights}: loss ${r.loss}, gradient norm ${r.gradNorm}`);
      tr.dispose();
    }
    model.dispose();
  });


  test("LoRA dropout: finite differences with the step's masks, the same masks however a step is run, new ones each step", async () => {
    const { model } = await tinyModel('grad-dropout');
    const lora = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const tr = await Trainer.create(model, { ...lora, dropout: 0.3 }, { lr: 1e-3 });
    assert.ok(Math.abs(tr.info.dropout - 0.3) < 1e-6, `dropout ${tr.info.dropout}`);
    randomizeB(tr, 0.3);
    // evaluate() runs with the masks gradients() used: the loss they differentiate.
    await checkGradients(tr, mixedBatch(), { logitsChunkRows: 4, microBatchTokens: 14 });
    // A token's masks follow its sequence and position: recomputed, kept or not, whole or split.
    // On a GPU a split batch's 14-column products run on other kernels than the whole batch's 28
    // (an H200 parted the two by 8.7e-4 of assertSameGrads' scale); the masks are the same either
    // way, as the CPU's 3e-6 shows.
    const ref = await tr.gradients(mixedBatch(), { beta: 0.1 });
    for (const [extra, gpuTol] of [[{ recompute: false }, 1e-4], [{ keptLayers: 1 }, 1e-4], [{ microBatchTokens: 14 }, 1e-2]] as const) {
      const g = await tr.gradients(mixedBatch(), { beta: 0.1, ...extra });
      assertSameGrads(ref.grads, g.grads, deviceTol(3e-6, gpuTol), JSON.stringify(extra));
    }
    // The same adapter without dropout: another gradient, and the same log-probs (none there).
    const plain = await Trainer.create(model, lora, { lr: 1e-3 });
    for (const [k, v] of Object.entries(tr.params())) plain.setParam(k, v);
    const relDiff = (a: Record<string, Float32Array>, b: Record<string, Float32Array>) => Math.sqrt(dot(shifted(a, b, -1), shifted(a, b, -1)) / dot(a, a));
    const noDrop = await plain.gradients(mixedBatch(), { beta: 0.1 });
    assert.ok(relDiff(ref.grads, noDrop.grads) > 0.05, `dropout changed the gradient by ${relDiff(ref.grads, noDrop.grads)}`);
    assert.deepEqual(await tr.logprobs(mixedBatch().map((q) => q.tokens)), await plain.logprobs(mixedBatch().map((q) => q.tokens)));
    // A step (lr 0: the parameters stay) draws new masks.
    await tr.step(mixedBatch(), { lr: 0 });
    const next = await tr.gradients(mixedBatch(), { beta: 0.1 });
    assert.ok(relDiff(ref.grads, next.grads) > 0.05, `new masks changed the gradient by ${relDiff(ref.grads, next.grads)}`);
    await assert.rejects(tr.gradients(mixedBatch(), { mergeAdapter: true }), /mergeAdapter cannot merge an adapter trained with dropout/);
    await assert.rejects(Trainer.create(model, { ...lora, dropout: 1 }, { lr: 1e-3 }), /LoRA dropout: expected a number in \[0, 1\), got 1/);
    plain.dispose();
    tr.dispose();
    model.dispose();
  });

  test('activation recomputation does not change the gradients', async () => {
    const { model } = await tinyModel('grad-recompute');
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    randomizeB(tr, 0.3);
    const a = await tr.gradients(mixedBatch(), { recompute: true, beta: 0.1 });
    const b = await tr.gradients(mixedBatch(), { recompute: false, beta: 0.1 });
    assertSameGrads(a.grads, b.grads, 1e-5);
    tr.dispose();
    model.dispose();
  });

});

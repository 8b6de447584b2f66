// Memory: kept layers, plans and their census, budgets that split steps, and profiled steps: the
// same gradients whatever is kept or split.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Trainer } from '../src/engine/index.js';
import type { OpCensus } from '../src/engine/types.js';
import { TEST_DEVICE } from './helpers/models.js';
import { ON_GPU, deviceTol } from './helpers/tolerance.js';
import { ALL, tinyModel, randomizeB, seq, mixedBatch, dot, largestDiff, assertSameGrads } from './helpers/trainer-fixtures.js';

describe('memory: kept layers, plans and budgets', () => {
  test('kept layers give the gradients of recomputing them, and rebuild only their cheap parts', async () => {
    for (const arch of ['qwen2', 'qwen3'] as const) {
      // qwen3 normalises q and k per head: its kept layers keep the pre-norm projections too.
      const { model } = await tinyModel(`grad-kept-layers-${arch}`, { arch });
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      randomizeB(tr, 0.3);
      const ref = await tr.gradients(mixedBatch(), { beta: 0.1 });
      const nLayer = model.info.nLayer;
      for (const keptLayers of [1, nLayer, nLayer + 3]) {
        const g = await tr.gradients(mixedBatch(), { beta: 0.1, keptLayers, profile: true });
        // Bit for bit on the CPU. An H200 parted qwen3's by 3e-5 of assertSameGrads' scale (qwen2's
        // stayed within 1e-5), likely as ggml-cuda fuses RMS_NORM, MUL and ROPE (qwen3's per-head
        // q/k norms) only where they are neighbours in the graph, which a kept layer reorders.
        assertSameGrads(ref.grads, g.grads, deviceTol(0, 1e-4), `${arch} kept ${keptLayers}:`);
        // A kept layer rebuilds norms, attention probabilities and SwiGLU; with all of them kept
        // no frozen weight is multiplied again.
        const reW = g.profile!.filter((o) => o.role === 're.W' || o.role === 're.lora').reduce((a, o) => a + o.count, 0);
        const reAttn = g.profile!.filter((o) => o.role === 're.attn').reduce((a, o) => a + o.count, 0);
        assert.ok(reAttn > 0, `${arch} kept ${keptLayers}: attention rebuilt`);
        assert.equal(reW === 0, keptLayers >= nLayer, `${arch} kept ${keptLayers}: ${reW} frozen/LoRA products recomputed`);
      }
      await assert.rejects(tr.gradients(mixedBatch(), { keptLayers: -1 }), /keptLayers must be a whole number ≥ 0 or 'auto' \(got -1\)/);
      tr.dispose();
      model.dispose();
    }
  });

  test('kept layers with gate and up in f16 (keptF16): the gradients of f32 ones, in fewer bytes', async () => {
    for (const type of ['f32', 'f16', 'q8_0'] as const) {
      const { model } = await tinyModel(`grad-kept-f16-${type}`, { type });
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      randomizeB(tr, 0.3);
      const nLayer = model.info.nLayer;
      // Merged, a kept f16 layer's down product reads the SwiGLU of the halves (q8_0: of the f16
      // merged weight), the rest widen them for the backward pass only.
      for (const extra of [{ keptLayers: 1, beta: 0.1 }, { keptLayers: nLayer }, { recompute: false }, { keptLayers: nLayer, mergeAdapter: true, beta: 0.1 }]) {
        const label = `${type} ${JSON.stringify(extra)}`;
        const ref = await tr.gradients(mixedBatch(), extra);
        const half = await tr.gradients(mixedBatch(), { ...extra, keptF16: true });
        // Rounding gate and up to f16. Measured on the CPU: cosine ≥ 0.9999998, norms within
        // 6.2e-5, the same losses, but where the down product reads the halves' SwiGLU (merged
        // f16 and q8_0) with KL, whose e^(ref − lp) amplifies the forward's change: cosine
        // ≥ 0.999998, norms and losses within 1.4e-3.
        const tol = 'mergeAdapter' in extra && type !== 'f32' ? 5e-3 : 1e-3;
        const [nr, nh] = [Math.sqrt(dot(ref.grads, ref.grads)), Math.sqrt(dot(half.grads, half.grads))];
        const cos = dot(ref.grads, half.grads) / (nr * nh);
        assert.ok(cos > 0.99999, `${label}: cosine ${cos}`);
        assert.ok(Math.abs(nh / nr - 1) < tol, `${label}: norm ${nh} vs ${nr}`);
        assert.ok(Math.abs(half.loss - ref.loss) <= tol * Math.abs(ref.loss), `${label}: loss ${half.loss} vs ${ref.loss}`);
      }
      // Every layer keeping its activations at 16 x 128 tokens: gate and up take half their bytes.
      const T = 16 * 128;
      const [f32, f16] = [await tr.plan(16, 128, { recompute: false, keptF16: false }), await tr.plan(16, 128, { recompute: false, keptF16: true })];
      const saved = f32.deviceBytes - f16.deviceBytes;
      const halves = nLayer * 2 * model.info.nFf * T * 2;
      // On a GPU, merged by default for f16, the SwiGLU of the halves frees the f32 one as well,
      // and the allocator's peak may fall elsewhere: only the sign and rough size are checked.
      const [lo, hi] = ON_GPU ? [0.5, 2] : [0.9, 1.1];
      assert.ok(saved > lo * halves && saved < hi * halves, `${type}: ${saved} bytes saved, gate and up halved ${halves}`);
      // Off unless asked.
      assert.equal((await tr.plan(16, 128, { recompute: false })).deviceBytes, f32.deviceBytes, `${type}: f32 by default`);
      await assert.rejects(tr.gradients(mixedBatch(), { keptF16: 'yes' as never }), /keptF16: expected true, false or undefined/);
      tr.dispose();
      model.dispose();
    }
  });

  test("kept layers keeping their norms (keptNorms): the same gradients, two norms fewer a kept layer, their bytes held", async () => {
    for (const type of ['f32', 'f16'] as const) {
      const { model } = await tinyModel(`grad-kept-norms-${type}`, { type, nEmbd: 64 });
      const nLayer = model.info.nLayer;
      // ggml's ops for the adapters' gradients, then our nodes (merged), which read the norms too
      for (const nodes of [{}, { fusedMerge: true, fusedLoraBackward: true, fusedMlpBackward: true, fusedNormBackward: true }]) {
        const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 }, nodes);
        randomizeB(tr, 0.3);
        const merged = 'fusedMerge' in nodes ? { mergeAdapter: true } : {};
        for (const extra of [{ keptLayers: 1, beta: 0.1 }, { keptLayers: nLayer }, { keptLayers: nLayer, microBatchTokens: 16 }]) {
          const label = `${type} ${JSON.stringify(nodes)} ${JSON.stringify(extra)}`;
          const ref = await tr.gradients(mixedBatch(), { ...merged, ...extra });
          const kept = await tr.gradients(mixedBatch(), { ...merged, ...extra, keptNorms: true });
          // The forward's norms are the same ops on the same numbers as their rebuilding.
          assert.equal(largestDiff(ref.grads, kept.grads), 0, `${label}: gradients`);
          assert.equal(kept.loss, ref.loss, `${label}: loss`);
        }
        // Per micro-batch graph, each kept layer drops its two norms' RMS_NORM and MUL ...
        const T = 16 * 32;
        const census = async (o: { keptNorms?: boolean }) => (await tr.plan(16, 32, { ...merged, keptLayers: nLayer, census: true, ...o })).census!;
        const count = (c: OpCensus[], op: string) => c.filter((x) => x.op === op && x.role === 're.norm').reduce((a, x) => a + x.count, 0);
        const [rebuilt, held] = [await census({}), await census({ keptNorms: true })];
        assert.deepEqual([count(rebuilt, 'RMS_NORM'), count(rebuilt, 'MUL')], [2 * nLayer, 2 * nLayer], `${JSON.stringify(nodes)}: norms rebuilt`);
        assert.deepEqual([count(held, 'RMS_NORM'), count(held, 'MUL'), held.filter((x) => x.role === 're.norm').length], [0, 0, 0], `${JSON.stringify(nodes)}: norms kept`);
        // ... and holds them: two f32 [n_embd, T] a layer, of which the allocator may share a little.
        const [a, b] = [await tr.plan(16, 32, { ...merged, keptLayers: nLayer }), await tr.plan(16, 32, { ...merged, keptLayers: nLayer, keptNorms: true })];
        const norms = nLayer * 2 * model.info.nEmbd * T * 4;
        assert.ok(b.deviceBytes - a.deviceBytes > 0.5 * norms && b.deviceBytes - a.deviceBytes <= norms, `${type}: ${b.deviceBytes - a.deviceBytes} bytes more, norms ${norms}`);
        await assert.rejects(tr.gradients(mixedBatch(), { keptNorms: 1 as never }), /keptNorms: expected true, false or undefined/);
        tr.dispose();
      }
      model.dispose();
    }
  });

  test('plan foretells the compute buffer a step takes, without taking it', async () => {
    const { model } = await tinyModel('plan');
    const B = 3;
    const L = 24;
    const batch = Array.from({ length: B }, (_, b) => ({ tokens: seq(L, 11 * b), weights: new Float32Array(L).fill(b % 2 ? 0.5 : -0.5) }));
    const measure = async (opts: { recompute?: boolean; keptLayers?: number; beta?: number; microBatchTokens?: number }) => {
      const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
      const plan = await tr.plan(B, L, opts);
      const st = await tr.step(batch, { lr: 1e-3, ...opts });
      // Part of the step: building and planning its graphs on the host, before they ran.
      assert.ok(st.graphMs > 0 && st.graphMs < st.ms, `graph work ${st.graphMs} ms of a ${st.ms} ms step`);
      tr.dispose();
      return { plan, used: st.computeBytes };
    };
    const none = await measure({});
    const lean = await measure({ keptLayers: model.info.nLayer, beta: 0.1 });
    const full = await measure({ recompute: false });
    const micro = await measure({ microBatchTokens: L });
    for (const [name, m] of Object.entries({ none, lean, full, micro })) {
      assert.ok(m.plan.deviceBytes > 0, `${name}: planned ${m.plan.deviceBytes}`);
      assert.equal(m.used, m.plan.deviceBytes, `${name}: step used ${m.used} bytes, plan said ${m.plan.deviceBytes}`);
      assert.equal(m.plan.cpuBytes === 0, TEST_DEVICE !== 'cuda', `${name}: host bytes ${m.plan.cpuBytes}`);
    }
    assert.ok(none.plan.deviceBytes < lean.plan.deviceBytes && lean.plan.deviceBytes < full.plan.deviceBytes, `recompute ${none.plan.deviceBytes} < kept ${lean.plan.deviceBytes} < none recomputed ${full.plan.deviceBytes}`);
    assert.ok(micro.plan.deviceBytes < none.plan.deviceBytes, `one sequence per micro-batch ${micro.plan.deviceBytes} < all at once ${none.plan.deviceBytes}`);
    assert.equal(micro.plan.microBatches, B);
    assert.equal(none.plan.microBatches, 1);
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q'] }, { lr: 1e-3 });
    await assert.rejects(tr.plan(0, L), /plan: need a whole number of sequences ≥ 1 of ≥ 2 tokens \(got 0 x 24\)/);
    await assert.rejects(tr.plan(1, 1e6), /plan: 1000000 tokens exceed the model's context length/);
    tr.dispose();
    model.dispose();
  });

  test("plan's census counts every op's work: products and bytes as the shapes say", async () => {
    const { model } = await tinyModel('census');
    const c = model.info;
    const r = 4;
    const tr = await Trainer.create(model, { rank: r, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    const B = 2;
    const L = 12;
    const T = B * L;
    const qkv = c.nEmbd * (c.nHead + 2 * c.nHeadKv) * c.headDim; // Σ n_in·n_out of q, k and v
    const perLayer = c.nEmbd * (2 * c.nHead * c.headDim + 2 * c.nHeadKv * c.headDim + 3 * c.nFf);
    const sumInOut = 7 * c.nEmbd + 2 * c.nHead * c.headDim + 2 * c.nHeadKv * c.headDim + 3 * c.nFf; // Σ n_in + n_out of all seven
    const census = async (opts: { recompute?: boolean; mergeAdapter?: boolean }) => {
      const p = await tr.plan(B, L, { ...opts, census: true });
      const sum = (pred: (o: OpCensus) => boolean, f: 'flops' | 'bytes' | 'count') => p.census!.filter(pred).reduce((a, o) => a + o[f], 0);
      return { p, sum };
    };
    const { p, sum } = await census({});
    const mm = (role: string) => (o: OpCensus) => o.role === role && o.op.startsWith('MUL_MAT');
    assert.equal(sum(mm('fwd.W'), 'flops'), 2 * T * c.nLayer * perLayer);
    // Recomputation skips each layer's down projection (its output is not needed again), and
    // the backward pass layer 0's dx through q, k and v (nothing needs the embeddings' gradient).
    assert.equal(sum(mm('re.W'), 'flops'), 2 * T * c.nLayer * (perLayer - c.nFf * c.nEmbd));
    assert.equal(sum(mm('bwd.W'), 'flops'), 2 * T * (c.nLayer * perLayer - qkv));
    // The adapter path: A x then B (A x) per projection.
    assert.equal(sum(mm('fwd.lora'), 'flops'), 2 * r * T * c.nLayer * sumInOut);
    // SwiGLU reads gate and up and writes their product, all f32.
    assert.equal(sum((o) => o.op === 'SWIGLU' && o.role === 'fwd.mlp', 'bytes'), c.nLayer * 3 * c.nFf * T * 4);
    assert.equal(sum(() => true, 'count'), p.census!.reduce((a, o) => a + o.count, 0));
    // Merged, the adapter's products no longer depend on the tokens: s·B·A per projection.
    const merged = await census({ mergeAdapter: true });
    assert.equal(merged.sum(mm('fwd.lora'), 'flops'), 2 * r * c.nLayer * perLayer);
    assert.equal(merged.sum(mm('fwd.W'), 'flops'), 2 * T * c.nLayer * perLayer);
    const none = await census({ recompute: false });
    assert.equal(none.sum((o) => o.role.startsWith('re.'), 'count'), 0);
    assert.equal((await tr.plan(B, L)).census, undefined);
    tr.dispose();
    model.dispose();
  });

  test("plan's census for ggml-cuda's kernels counts the conversions they make around products and flash attention", async () => {
    const B = 2;
    const L = 12;
    const T = B * L;
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const total = (census: OpCensus[]) => census.reduce((a, o) => a + o.bytes, 0);
    const pick = (census: OpCensus[], role: string, op: string) => census.filter((o) => o.role === role && o.op === op);
    const sum = (es: OpCensus[], f: 'bytes' | 'count') => es.reduce((a, o) => a + o[f], 0);

    // f16 weights: every product of them (more than 16 columns) converts an f32 input to f16 (6
    // bytes a value, and reads 2 where the graph says 4) and writes f16, converted to f32 after
    // (6 bytes a value, and writes 2 where the graph says 4): each conversion adds two thirds of itself.
    const { model } = await tinyModel('census-cuda', { type: 'f16' });
    const c = model.info;
    const tr = await Trainer.create(model, spec, { lr: 1e-3 });
    const plan = async (censusKernels: 'graph' | 'cuda') => (await tr.plan(B, L, { fuseAdapter: false, census: true, censusKernels })).census!;
    const [graph, cuda] = [await plan('graph'), await plan('cuda')];
    assert.ok(!graph.some((o) => o.op.startsWith('CONVERT')), 'the graph model converts nothing');
    const conversions = sum(cuda.filter((o) => o.op.startsWith('CONVERT')), 'bytes');
    assert.ok(conversions > 0);
    assert.ok(Math.abs(total(cuda) - (total(graph) + (2 * conversions) / 3)) < 1, `cuda ${total(cuda)} = graph ${total(graph)} + two thirds of ${conversions}`);
    // Each of the forward pass's 7 products per layer writes n_out x T in f16 and converts it.
    const [qOut, kvOut] = [c.nHead * c.headDim, c.nHeadKv * c.headDim];
    const sumOut = 2 * qOut + 2 * kvOut + 2 * c.nFf + c.nEmbd; // q, k, v, o, gate, up, down
    const results = pick(cuda, 'fwd.W', 'CONVERT f16 to f32 (cuBLAS result)');
    assert.equal(sum(results, 'count'), 7 * c.nLayer);
    assert.equal(sum(results, 'bytes'), 6 * T * c.nLayer * sumOut);
    // q, k and v read one f16 copy of their input, gate and up another: only o and down convert
    // theirs in the product.
    assert.equal(sum(pick(graph, 'fwd.W', 'MUL_MAT f16 x f16'), 'count'), 5 * c.nLayer);
    const inputs = pick(cuda, 'fwd.W', 'CONVERT f32 to f16 (cuBLAS src1)');
    assert.equal(sum(inputs, 'count'), 2 * c.nLayer);
    assert.equal(sum(inputs, 'bytes'), 6 * T * c.nLayer * (qOut + c.nFf));
    // bf16 cuBLAS (ggml-cuda's GGML_CUDA_CUBLAS_COMPUTE_TYPE) writes f32 results and converts the
    // f16 weights instead.
    const before = process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
    process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = 'bf16';
    const bf16 = await plan('cuda').finally(() => {
      if (before === undefined) delete process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
      else process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = before;
    });
    assert.equal(pick(bf16, 'fwd.W', 'CONVERT f16 to f32 (cuBLAS result)').length, 0);
    assert.equal(sum(pick(bf16, 'fwd.W', 'CONVERT f16 to bf16 (cuBLAS src0)'), 'count'), 7 * c.nLayer);
    await assert.rejects(tr.plan(B, L, { census: true, censusKernels: 'rocm' as never }), /censusKernels must be 'graph' or 'cuda' \(got rocm\)/);
    tr.dispose();
    model.dispose();

    // f32 weights convert nothing in products; flash attention converts its f32 K and V views.
    const f32 = await tinyModel('census-cuda-f32', { nEmbd: 128, nHead: 2, nHeadKv: 1 });
    const flash = await Trainer.create(f32.model, spec, { lr: 1e-3 }, { flashAttn: true });
    const planF = async (censusKernels: 'graph' | 'cuda') => (await flash.plan(B, L, { census: true, censusKernels })).census!;
    const [g32, c32] = [await planF('graph'), await planF('cuda')];
    // (The tiny model's tied embedding table is f16, so the LM head's products do convert.)
    assert.ok(!c32.some((o) => o.op.includes('cuBLAS') && !o.role.startsWith('head.')), 'no f32 product converts');
    for (const role of ['fwd.attn', 're.attn']) {
      for (const kv of ['K', 'V']) {
        const e = pick(c32, role, `CONVERT f32 to f16 (flash-attn ${kv})`);
        assert.equal(sum(e, 'count'), f32.model.info.nLayer, `${role} ${kv}`);
        assert.equal(sum(e, 'bytes'), 6 * T * f32.model.info.nLayer * f32.model.info.nHeadKv * f32.model.info.headDim, `${role} ${kv}`);
      }
    }
    const fa = sum(c32.filter((o) => o.op.startsWith('CONVERT')), 'bytes');
    assert.ok(Math.abs(total(c32) - (total(g32) + (2 * fa) / 3)) < 1, `flash: cuda ${total(c32)} = graph ${total(g32)} + two thirds of ${fa}`);
    flash.dispose();
    f32.model.dispose();
  });

  test('a memory budget splits the batch and keeps layers as the plan allows, with the same gradients', async () => {
    const { model } = await tinyModel('budget');
    const nLayer = model.info.nLayer;
    const batch = [...mixedBatch(), ...mixedBatch().map((q) => ({ ...q, tokens: q.tokens.map((t) => (t * 3 + 1) % 150000) }))];
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    randomizeB(tr, 0.3);
    const whole = await tr.gradients(batch, { beta: 0.1 });
    assert.equal(whole.microBatches, 1);
    // The floor: one sequence (the longest, 14 tokens) per micro-batch.
    const floor = await tr.plan(1, 14, { beta: 0.1 });
    const all = await tr.plan(batch.length, 14, { beta: 0.1 });
    assert.ok(floor.deviceBytes < all.deviceBytes, `one sequence ${floor.deviceBytes} < four ${all.deviceBytes}`);
    const tight = await tr.gradients(batch, { beta: 0.1, memoryBudget: floor.deviceBytes });
    assert.ok(tight.microBatches > 1, `${tight.microBatches} micro-batches of ${tight.microBatchTokens} tokens`);
    assert.ok(tight.computeBytes <= floor.deviceBytes || tight.computeBytes === whole.computeBytes, 'held buffer: the largest step so far');
    // Other padding and summation order, amplified by the KL's e^(ref − lp) with this large
    // adapter: measured up to 1.2e-6 (7e-7 before dK and dV summed query heads in one product),
    // and 1.5e-7 without the KL. On a GPU the smaller micro-batches' products run on other
    // kernels too (an H200 parted them by 2.7e-3 of assertSameGrads' scale).
    assertSameGrads(whole.grads, tight.grads, deviceTol(3e-6, 1e-2));
    assert.ok(Math.abs(tight.loss - whole.loss) <= deviceTol(1e-5, 1e-2) * (1 + Math.abs(whole.loss)), `loss ${tight.loss} vs ${whole.loss}`);
    // Room for everything: one micro-batch, every layer kept; the plan says so before the step does.
    const roomy = await tr.plan(batch.length, 14, { beta: 0.1, memoryBudget: 1e12, keptLayers: 'auto' });
    assert.deepEqual([roomy.microBatches, roomy.keptLayers], [1, nLayer]);
    const st = await tr.gradients(batch, { beta: 0.1, memoryBudget: 1e12, keptLayers: 'auto' });
    assert.deepEqual([st.microBatches, st.keptLayers], [1, nLayer]);
    // Just under the all-kept plan: fewer layers kept, still one micro-batch.
    const allKept = await tr.plan(batch.length, 14, { beta: 0.1, keptLayers: nLayer });
    const fewer = await tr.plan(batch.length, 14, { beta: 0.1, memoryBudget: allKept.deviceBytes - 1, keptLayers: 'auto' });
    assert.ok(fewer.keptLayers < nLayer && fewer.deviceBytes < allKept.deviceBytes, `kept ${fewer.keptLayers} in ${fewer.deviceBytes} bytes`);
    await assert.rejects(tr.gradients(batch, { memoryBudget: 1024 }), /step: the training pass over one sequence of 14 tokens plans [\d.]+ MiB of compute buffer, over the memory budget of 0\.0 MiB \(memoryBudget\): give it more memory or use shorter sequences$/);
    await assert.rejects(tr.gradients(batch, { keptLayers: 'auto' }), /keptLayers 'auto' needs a memoryBudget/);
    await assert.rejects(tr.gradients(batch, { memoryBudget: -1 }), /memoryBudget must be a number of bytes ≥ 0 \(got -1\)/);
    tr.dispose();
    model.dispose();
  });

  test('a memory budget weighs more micro-batches against recomputed layers by the planned work, with the same gradients', async () => {
    const { model } = await tinyModel('budget-split');
    const nLayer = model.info.nLayer;
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    randomizeB(tr, 0.3);
    // 16 x 128 tokens: long enough that recomputing a layer costs more than reading the weights again.
    const B = 16, L = 128;
    const batch = Array.from({ length: B }, (_, b) => {
      const w = new Float32Array(L).fill(b % 2 ? 0.7 : -0.4, 1);
      return { tokens: seq(L, 13 * b + 1), weights: w };
    });
    const none = await tr.plan(B, L, { keptLayers: 0 });
    const all = await tr.plan(B, L, { keptLayers: nLayer });
    const budget = Math.floor((none.deviceBytes + all.deviceBytes) / 2);
    const fewest = await tr.plan(B, L, { memoryBudget: budget, keptLayers: 'auto', keptSplit: false });
    assert.equal(fewest.microBatches, 1);
    assert.ok(fewest.keptLayers < nLayer, `one micro-batch keeps ${fewest.keptLayers} of ${nLayer} layers in ${budget} bytes`);
    const split = await tr.plan(B, L, { memoryBudget: budget, keptLayers: 'auto' });
    assert.ok(split.microBatches > 1 && split.keptLayers > fewest.keptLayers, `split: ${split.microBatches} micro-batches, ${split.keptLayers} kept`);
    assert.ok(split.deviceBytes <= budget, `${split.deviceBytes} within ${budget}`);
    assert.ok(split.estimatedMs < fewest.estimatedMs, `estimated ${split.estimatedMs} against ${fewest.estimatedMs} ms`);
    // The same split and kept layers planned by hand give the same estimate (it is the plan's).
    const byHand = await tr.plan(B, L, { microBatchTokens: split.microBatchTokens, keptLayers: split.keptLayers });
    assert.equal(byHand.estimatedMs, split.estimatedMs);
    // Steps settle what the plan did, twice (the second from the remembered split), with the
    // gradients of the whole batch at once (the CPU measured 4.8e-8 apart at 0.052: summation order).
    const whole = await tr.gradients(batch, {});
    for (let i = 0; i < 2; i++) {
      const st = await tr.gradients(batch, { memoryBudget: budget, keptLayers: 'auto' });
      assert.deepEqual([st.microBatches, st.microBatchTokens, st.keptLayers], [split.microBatches, split.microBatchTokens, split.keptLayers], `step ${i}`);
      assertSameGrads(whole.grads, st.grads, deviceTol(3e-6, 1e-2), `step ${i}`);
    }
    const off = await tr.gradients(batch, { memoryBudget: budget, keptLayers: 'auto', keptSplit: false });
    assert.deepEqual([off.microBatches, off.keptLayers], [1, fewest.keptLayers]);
    // Micro-batches of one shape share one graph, built once (TrainingPassCache); a last one of
    // another shape builds its own: 3 x 5 sequences and 1, the same gradients.
    const uneven = await tr.gradients(batch, { microBatchTokens: 5 * L });
    assert.equal(uneven.microBatches, 4);
    assertSameGrads(whole.grads, uneven.grads, deviceTol(3e-6, 1e-2), 'uneven micro-batches');
    tr.dispose();
    model.dispose();
  });

  test('a profiled step times its ops and changes no number', async () => {
    const { model } = await tinyModel('grad-profile');
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
    randomizeB(tr, 0.3);
    const plain = await tr.gradients(mixedBatch(), { beta: 0.1 });
    const timed = await tr.gradients(mixedBatch(), { beta: 0.1, profile: true });
    assert.equal(plain.profile, undefined);
    // Same kernels, run one by one: the same numbers (a GPU may pick another cuBLAS algorithm).
    assertSameGrads(plain.grads, timed.grads, deviceTol(0, 1e-5));
    assert.ok(Math.abs(timed.loss - plain.loss) <= deviceTol(0, 1e-6), `loss ${timed.loss} vs ${plain.loss}`);
    const ops = timed.profile!;
    const names = ops.map((o) => o.op);
    // Forward and backward matmuls, the LoRA outer products, the norm's backward.
    for (const want of ['MUL_MAT f32 x f32', 'OUT_PROD f32 x f32', 'RMS_NORM_BACK']) assert.ok(names.includes(want), `${want} in ${names.join(', ')}`);
    assert.equal(new Set(ops.map((o) => `${o.op} @${o.role}`)).size, ops.length, 'one entry per op kind and role');
    // Every op is named for its role: forward, recomputed and backward layers, the LM head's loss,
    // and the base model's pass for the KL (β > 0).
    const roles = new Set(ops.map((o) => o.role));
    for (const want of ['fwd.W', 'fwd.lora', 'fwd.attn', 're.W', 're.attn', 'bwd.W', 'bwd.lora', 'bwd.attn', 'bwd.mlp', 'head.loss', 'lp.W', 'head.lp']) {
      assert.ok(roles.has(want), `${want} in ${[...roles].join(', ')}`);
    }
    assert.ok(!roles.has('other'), `unnamed ops: ${ops.filter((o) => o.role === 'other').map((o) => o.op).join(', ')}`);
    assert.ok(ops.filter((o) => o.role === 'fwd.W').every((o) => o.op.startsWith('MUL_MAT') || o.op === 'ADD'), 'fwd.W: frozen products and biases');
    const kept = await tr.gradients(mixedBatch(), { beta: 0.1, recompute: false, profile: true });
    assert.ok(!kept.profile!.some((o) => o.role.startsWith('re.')), 'nothing recomputed with recompute: false');
    for (let i = 1; i < ops.length; i++) assert.ok(ops[i]!.ms <= ops[i - 1]!.ms, 'slowest first');
    const total = ops.reduce((a, o) => a + o.ms, 0);
    assert.ok(ops.every((o) => o.count > 0 && o.ms >= 0) && total > 0 && total <= timed.ms, `ops ${total} ms of a ${timed.ms} ms step`);
    // The optimizer's own graph is timed too when the step updates.
    const st = await tr.step(mixedBatch(), { lr: 1e-3, profile: true });
    assert.ok(st.profile!.some((o) => o.op === 'OPT_STEP_ADAMW' && o.role === 'adamw.step'), 'AdamW timed');
    // Parameters, gradients and moments each live in one buffer at the same offsets: the norm
    // (square, sum), unscaling, clipping and the update are one op each over all 28 tensors.
    const adamw = st.profile!.filter((o) => o.role.startsWith('adamw.'));
    assert.deepEqual(
      adamw.map((o) => `${o.role} ${o.op} x${o.count}`).sort(),
      ['adamw.norm SCALE x1', 'adamw.norm SQR x1', 'adamw.norm SUM x1', 'adamw.step OPT_STEP_ADAMW x1', 'adamw.step SCALE x1'],
    );
    tr.dispose();
    model.dispose();
  });
});

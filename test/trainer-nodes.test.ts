// Our fused nodes and merged paths (attention, SwiGLU, merges, the adapters' gradients, the LM head,
// the norms) against finite differences and against ggml's ops for the same gradients.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Trainer } from '../src/engine/index.js';
import type { OpCensus, StepOptions, TrainSequence } from '../src/engine/types.js';
import { ON_GPU, deviceTol } from './helpers/tolerance.js';
import { ALL, tinyModel, randomizeB, pairedTrainers, opsAndNodes, seq, mixedBatch, setAll, largestDiff, assertSameGrads, assertSameAcrossModes, checkAgainstPath, checkGradients, plannedFlops } from './helpers/trainer-fixtures.js';

describe('our nodes and the ggml paths they replace: the same gradients', () => {
  test('an adapter merged into the weights (mergeAdapter): finite differences, and the gradients of the adapter path', async () => {
    // The same sums in another order. Measured on the CPU: 2.4e-6 at most, 2.7e-5 with KL; on a
    // GPU the merge's f32 product may run on TF32 tensor cores.
    const { model, tr } = await checkAgainstPath('merged', { mergeAdapter: true }, { mergeAdapter: false });
    // Steps and plans say what they settled: asked, or the default (f32 weights: not merged).
    for (const [asked, merged] of [[true, true], [false, false], [undefined, false]] as const) {
      const opts = asked === undefined ? {} : { mergeAdapter: asked };
      assert.equal((await tr.gradients(mixedBatch(), opts)).adapterMerged, merged, `mergeAdapter ${asked}`);
      assert.equal((await tr.plan(2, 14, opts)).adapterMerged, merged, `plan, mergeAdapter ${asked}`);
    }
    await assert.rejects(tr.gradients(mixedBatch(), { mergeAdapter: 'yes' as never }), /mergeAdapter: expected true, false or undefined/);
    // A GPU's default step: merged, with each group's dx from one product where that moves fewer
    // bytes (fuseAdapter 'bytes'), [W_qᵀ | W_kᵀ | W_vᵀ]·[dq ; dk ; dv] with the merged Wᵀ; here
    // always (true). The same sums in another order.
    const joined = { mergeAdapter: true, fuseAdapter: true } as const;
    await checkGradients(tr, mixedBatch(), { logitsChunkRows: 4, microBatchTokens: 14, ...joined });
    await assertSameAcrossModes(
      'merged vs merged with joined dx products',
      (extra) => tr.gradients(mixedBatch(), { ...extra, mergeAdapter: true, fuseAdapter: false }),
      (extra) => tr.gradients(mixedBatch(), { ...extra, ...joined }),
      3e-2,
    );
    const products = async (o: Omit<StepOptions, 'lr'>) =>
      (await tr.plan(2, 12, { ...o, census: true })).census!.filter((c) => c.role === 'bwd.W' && c.op.startsWith('MUL_MAT')).reduce((a, c) => a + c.count, 0);
    // q/k/v (but in layer 0, whose dx nothing needs), o, gate/up and down: one product each.
    const nLayer = model.info.nLayer;
    assert.equal(await products(joined), 4 * nLayer - 1);
    assert.equal(await products({ mergeAdapter: true, fuseAdapter: false }), 7 * nLayer - 3);
    // Fusing likewise: asked, or the device's default ('bytes' on a GPU, off on the CPU).
    for (const [asked, settled] of [[true, true], [false, false], ['bytes', 'bytes'], [undefined, model.info.gpu ? 'bytes' : false]] as const) {
      assert.equal((await tr.plan(2, 14, asked === undefined ? {} : { fuseAdapter: asked })).fuseAdapter, settled, `plan, fuseAdapter ${asked}`);
    }
    tr.dispose();
    model.dispose();
  });

  test('merges by our node (fusedMerge): finite differences, the gradients of ggml merged ops, transposes made with the merge', async () => {
    // f32 weights: the same sums in another order (the node sums s·Σ B·A where ggml's ops scale A
    // first). Measured on the CPU: 1.9e-6 at most, 5.2e-6 with KL.
    const { model } = await tinyModel('grad-merge-node');
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const ops = await Trainer.create(model, spec, { lr: 1e-3 }, { transposedWeights: 'per-step' });
    const node = await Trainer.create(model, spec, { lr: 1e-3 }, { transposedWeights: 'per-step', fusedMerge: true });
    assert.deepEqual([ops.info.fusedMerge, node.info.fusedMerge], [false, true]);
    randomizeB(ops, 0.3);
    setAll(node, ops.params());
    const merged = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true } as const;
    await checkGradients(node, mixedBatch(), merged);
    for (const fuse of [{}, { fuseAdapter: true }]) {
      await assertSameAcrossModes(
        `ggml merged ops vs the merge node ${JSON.stringify(fuse)}`,
        (extra) => ops.gradients(mixedBatch(), { ...merged, ...fuse, ...extra }),
        (extra) => node.gradients(mixedBatch(), { ...merged, ...fuse, ...extra }),
        3e-2,
      );
    }
    // Unmerged steps never meet it: the same numbers to the bit.
    assert.deepEqual((await node.gradients(mixedBatch())).grads, (await ops.gradients(mixedBatch())).grads);
    // One node per adapted projection and pass where three ops and more were, and no transposing
    // copy of a merged weight: a recomputed layer's node wrote it, a kept layer's backward pass made it.
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
      const prof = (await node.gradients(mixedBatch(), { ...merged, ...extra, profile: true })).profile!;
      const at = (role: string) => [...new Set(prof.filter((o) => o.role === role).map((o) => o.op))].sort();
      assert.deepEqual(at('fwd.lora'), ['CUSTOM'], `${JSON.stringify(extra)} fwd.lora`);
      assert.deepEqual(at('bwd.Wt'), [], `${JSON.stringify(extra)} bwd.Wt`);
      if (!('recompute' in extra)) assert.deepEqual(at('re.lora'), ['CUSTOM'], `${JSON.stringify(extra)} re.lora`);
    }
    // In the census, a merge's 12 bytes a weight (an f32 delta written, read with W, the sum
    // written) and the transposing copy's 8 become the node's 8 (f32 weights: read W, write it)
    // in the forward pass, 12 in a recomputed one (the transpose too).
    const census = async (tr: Trainer) => (await tr.plan(2, 16, { mergeAdapter: true, census: true })).census!;
    const bytes = (c: OpCensus[], role: string) => c.filter((o) => o.role === role).reduce((a, o) => a + o.bytes, 0);
    const [cOps, cNode] = [await census(ops), await census(node)];
    assert.ok(bytes(cNode, 'fwd.lora') < bytes(cOps, 'fwd.lora') / 2, `fwd.lora ${bytes(cNode, 'fwd.lora')} vs ${bytes(cOps, 'fwd.lora')}`);
    assert.ok(bytes(cNode, 're.lora') < bytes(cOps, 're.lora'), `re.lora ${bytes(cNode, 're.lora')} vs ${bytes(cOps, 're.lora')}`);
    assert.ok(bytes(cOps, 'bwd.Wt') > 0 && bytes(cNode, 'bwd.Wt') === 0, `bwd.Wt ${bytes(cNode, 'bwd.Wt')} vs ${bytes(cOps, 'bwd.Wt')}`);
    // The node's s·B·A counts as the product ggml's merge took for it.
    const flops = (c: OpCensus[], role: string) => c.filter((o) => o.role === role).reduce((a, o) => a + o.flops, 0);
    assert.equal(flops(cNode, 'fwd.lora'), flops(cOps, 'fwd.lora'));
    ops.dispose();
    node.dispose();
    model.dispose();
  });

  test('merges by our node in 16-bit weights: the rounding of ggml merged ops', async () => {
    // W + s·B·A rounds to the weight's type once either way, from f32 sums in another order, so a
    // few weights land one f16 (bf16) step apart. Measured on the CPU against ggml's merged ops
    // (another tiny model): f16 1.4e-4 of the largest gradient 0.29, bf16 6.5e-4; the merged
    // steps themselves lie 6.2e-4 (f16) and 4.5e-3 (bf16) from the unmerged path. Without KL:
    // its e^(ref − lp) turns those steps into 3% of a gradient where its terms cancel.
    for (const type of ['f16', 'bf16']) {
      const { model } = await tinyModel(`grad-merge-node-${type}`, { type });
      const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
      const ops = await Trainer.create(model, spec, { lr: 1e-3 });
      const node = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedMerge: true });
      randomizeB(ops, 0.3);
      setAll(node, ops.params());
      for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
        const [a, b] = [await ops.gradients(mixedBatch(), { mergeAdapter: true, ...extra }), await node.gradients(mixedBatch(), { mergeAdapter: true, ...extra })];
        assertSameGrads(a.grads, b.grads, deviceTol(type === 'f16' ? 5e-3 : 2e-2, 3e-2), `${type} ${JSON.stringify(extra)}`);
      }
      // Log-prob passes merge where steps do by default (a GPU with f16 weights): there, by the node.
      const seqs = mixedBatch().map((q) => q.tokens);
      const lp = await ops.logprobs(seqs);
      (await node.logprobs(seqs)).forEach((row, i) => row.forEach((v, t) => assert.ok(Math.abs(v - lp[i]![t]!) <= deviceTol(0, 2e-2), `${type} log-prob ${i}:${t}: ${v} vs ${lp[i]![t]}`)));
      ops.dispose();
      node.dispose();
      model.dispose();
    }
  });

  test('merges into bf16 (mergeBf16): f32 weights untouched, 16-bit and quantized ones within bf16 rounding, products without result conversions', async () => {
    // Measured on the CPU (this tiny qwen2, B std 0.3, no KL): f16 weights merged into bf16 lie
    // 2.2e-2 from the unmerged path at a largest gradient of 1.62 (merged into f16: 3.5e-3), as a
    // bf16 model's merged steps do (3.6e-2); our node and ggml's ops 5.3e-6 apart; q8_0 6.0e-2
    // from unmerged (into f16: 5.8e-2), node and ops the same ops there (quantized: ggml's).
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    for (const type of ['f32', 'f16', 'q8_0']) {
      const { model } = await tinyModel(`merge-bf16-${type}`, { type });
      const plain = await Trainer.create(model, spec, { lr: 1e-3 });
      const ops = await Trainer.create(model, spec, { lr: 1e-3 }, { mergeBf16: true });
      const node = await Trainer.create(model, spec, { lr: 1e-3 }, { mergeBf16: true, fusedMerge: true });
      assert.deepEqual([plain.info.mergeBf16, ops.info.mergeBf16, node.info.mergeBf16], [false, true, true]);
      randomizeB(plain, 0.3);
      setAll(ops, plain.params());
      setAll(node, plain.params());
      for (const extra of [{}, { keptLayers: 1 }]) {
        const label = `${type} ${JSON.stringify(extra)}`;
        const unmerged = await plain.gradients(mixedBatch(), { ...extra, mergeAdapter: false });
        const merged = await plain.gradients(mixedBatch(), { ...extra, mergeAdapter: true });
        const [a, b] = [await ops.gradients(mixedBatch(), { ...extra, mergeAdapter: true }), await node.gradients(mixedBatch(), { ...extra, mergeAdapter: true })];
        assertSameGrads(a.grads, b.grads, deviceTol(type === 'f16' ? 1e-4 : 1e-5, 3e-2), `${label}: node against ops`);
        if (type === 'f32') {
          assert.deepEqual(a.grads, merged.grads, `${label}: f32 weights merge in f32 either way`);
          continue;
        }
        assertSameGrads(unmerged.grads, a.grads, deviceTol(type === 'f16' ? 4e-2 : 8e-2, 8e-2), `${label}: against the unmerged path`);
        // It did merge into bf16: not the f16 merge's numbers.
        const apart = largestDiff(merged.grads, a.grads);
        assert.ok(apart > 1e-3, `${label}: bf16 and f16 merges ${apart} apart`);
      }
      if (type === 'f16') {
        // ggml-cuda's census: merged products read bf16 weights and write f32 results directly.
        const census = async (tr: Trainer) => (await tr.plan(2, 12, { mergeAdapter: true, census: true, censusKernels: 'cuda' })).census!;
        const [c16, cbf] = [await census(plain), await census(node)];
        const has = (c: OpCensus[], role: string, op: string) => c.some((o) => o.role === role && o.op === op);
        for (const role of ['fwd.W', 're.W']) {
          assert.ok(has(c16, role, 'CONVERT f16 to f32 (cuBLAS result)') && !has(cbf, role, 'CONVERT f16 to f32 (cuBLAS result)'), `${role}: result conversions`);
          assert.ok(has(cbf, role, 'MUL_MAT bf16 x f32'), `${role}: bf16 products`);
        }
        assert.ok(cbf.some((o) => o.role === 'fwd.lora' && o.op === 'CUSTOM'), 'merged by the node');
      }
      for (const t of [plain, ops, node]) t.dispose();
      model.dispose();
    }
  });

  test('our three nodes together: merges sit beside the attention node, the gradients of ggml ops, fewer runs of ours', async () => {
    // Three layers (an odd count: the last forward merge has no pair), one K/V head per two
    // query heads, f32: the same sums as ggml's ops in another order.
    const { model } = await tinyModel('nodes-together', { nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const n = model.info.nLayer;
    assert.equal(n, 3);
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const ops = await Trainer.create(model, spec, { lr: 1e-3 });
    const nodes = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true });
    randomizeB(ops, 0.3);
    setAll(nodes, ops.params());
    const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true };
    // The merge node rounds its f32 sums in another order than ggml's three ops: measured on the
    // CPU up to 1.3e-5 at a gradient of 0.30 (the nodes' order in the graph changes no bit: the
    // same gradients as with each layer's merges at its own start).
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }, { beta: 0.1 }]) {
      const [a, b] = [await ops.gradients(mixedBatch(), { ...stepOpts, ...extra }), await nodes.gradients(mixedBatch(), { ...stepOpts, ...extra })];
      assertSameGrads(a.grads, b.grads, deviceTol('beta' in extra ? 2e-4 : 5e-5, 3e-2), `${JSON.stringify(extra)}: ggml merged ops vs our three nodes`);
    }
    // Runs of our nodes in the graph's order (a GPU's pieces of our backend): the forward merges
    // two layers at a time, then per layer the SwiGLU's node, and the attention's with the merges
    // of the layer below beside it; the top layer's merges alone. Each layer's own would be
    // 4 per layer (n + 3n).
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
      const st = await nodes.step(mixedBatch(), { lr: 0, ...stepOpts, ...extra });
      assert.equal(st.graphCustomRuns, Math.ceil(n / 2) + 2 * n + 1, `${JSON.stringify(extra)}: ${st.graphCustomRuns} runs`);
      // The plan's census counts them alike, over every micro-batch (a GPU's estimate prices them).
      const plan = await nodes.plan(2, 14, { ...stepOpts, ...extra, census: true });
      assert.equal(plan.microBatches, 2);
      assert.equal(plan.censusCustomRuns, 2 * st.graphCustomRuns, `${JSON.stringify(extra)}: the plan's runs`);
    }
    ops.dispose();
    nodes.dispose();
    model.dispose();
  });

  test("the adapters' gradient nodes (fusedLoraBackward): the gradients of ggml's merged ops, the same FLOPs in fewer ops, no more runs of ours", async () => {
    const { model } = await tinyModel('lora-nodes', { nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const n = model.info.nLayer;
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const three = { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true };
    const ops = await Trainer.create(model, spec, { lr: 1e-3 });
    const lora = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedLoraBackward: true });
    const others = await Trainer.create(model, spec, { lr: 1e-3 }, three);
    const all = await Trainer.create(model, spec, { lr: 1e-3 }, { ...three, fusedLoraBackward: true });
    assert.deepEqual([ops.info.fusedLoraBackward, lora.info.fusedLoraBackward, all.info.fusedLoraBackward], [false, true, true]);
    randomizeB(ops, 0.3);
    for (const t of [lora, others, all]) setAll(t, ops.params());
    const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true };
    // f32: the same products summed in another order.
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }, { beta: 0.1 }]) {
      const tol = deviceTol('beta' in extra ? 1e-4 : 1e-5, 3e-2);
      const label = JSON.stringify(extra);
      const [a, b] = [await ops.gradients(mixedBatch(), { ...stepOpts, ...extra }), await lora.gradients(mixedBatch(), { ...stepOpts, ...extra })];
      assert.ok(largestDiff(a.grads, b.grads) > 0, `${label}: the nodes took no part`);
      assertSameGrads(a.grads, b.grads, tol, `${label}: ggml's ops vs the adapters' nodes`);
      const [c, d] = [await others.gradients(mixedBatch(), { ...stepOpts, ...extra }), await all.gradients(mixedBatch(), { ...stepOpts, ...extra })];
      assertSameGrads(c.grads, d.grads, tol, `${label}: our three nodes, then with the adapters' too`);
    }
    // Unmerged steps keep ggml's ops: the same bits.
    const plain = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: false };
    assert.equal(largestDiff((await ops.gradients(mixedBatch(), plain)).grads, (await lora.gradients(mixedBatch(), plain)).grads), 0);
    // Two nodes per group (q, k, v; o; gate, up; down) and layer, layer 0's included (its dx is
    // not needed, its adapters' gradients are); the same products' FLOPs.
    const census = async (t: Trainer) => (await t.plan(2, 12, { mergeAdapter: true, census: true })).census!.filter((o) => o.role === 'bwd.lora');
    const [before, after] = [await census(ops), await census(lora)];
    const count = (c: OpCensus[]) => c.reduce((s, o) => s + o.count, 0);
    const flops = (c: OpCensus[]) => c.reduce((s, o) => s + o.flops, 0);
    assert.equal(after.find((o) => o.op === 'CUSTOM')?.count, 8 * n);
    assert.ok(!before.some((o) => o.op === 'CUSTOM'));
    assert.equal(flops(after), flops(before));
    assert.ok(!after.some((o) => o.op.startsWith('OUT_PROD') || o.op === 'SCALE' || o.op === 'CONT'), 'no outer products, scales or transposes of B left');
    // (what is left: the merges of the backward's transposed weights by ggml's ops, a product and
    // an add each)
    assert.ok(count(after) < count(before), `${count(after)} ops against ${count(before)}`);
    // A layer's A lie side by side in the adapter's memory, so a group's stack is a view of it,
    // and their gradients likewise in the optimizer's: the nodes sum into them, no adds after.
    const op = (c: OpCensus[], name: string) => c.filter((o) => o.op.startsWith(name)).reduce((s, o) => s + o.count, 0);
    assert.deepEqual([op(after, 'CONCAT'), op(after, 'ADD')], [0, op(after, 'MUL_MAT')]);
    assert.deepEqual((await census(all)).map((o) => o.op), ['CUSTOM'], 'with our merges too, nothing but our nodes');
    // Where the backend's alignment leaves a gap after each A (68 x 3 floats: 816 bytes, not a
    // multiple of 32), the stack is concatenated and the gradients added after, to the same gradients.
    const { model: odd } = await tinyModel('lora-nodes-gap', { nEmbd: 68, nHead: 2, nHeadKv: 1, nLayer: 2 });
    const oddSpec = { rank: 3, alpha: 6, targets: [...ALL], seed: 3 };
    const [oddOps, oddLora] = [await Trainer.create(odd, oddSpec, { lr: 1e-3 }), await Trainer.create(odd, oddSpec, { lr: 1e-3 }, { fusedLoraBackward: true })];
    randomizeB(oddOps, 0.3);
    setAll(oddLora, oddOps.params());
    assertSameGrads((await oddOps.gradients(mixedBatch(), stepOpts)).grads, (await oddLora.gradients(mixedBatch(), stepOpts)).grads, deviceTol(1e-5, 3e-2), 'with gaps between the A');
    const oddCensus = await census(oddLora);
    assert.ok(op(oddCensus, 'CONCAT') > 0 && op(oddCensus, 'ADD') > op(oddCensus, 'MUL_MAT'), `gaps between the A: a concatenated stack, gradients added: ${JSON.stringify(oddCensus)}`);
    oddOps.dispose();
    oddLora.dispose();
    odd.dispose();
    // With the SwiGLU node as well, down's adapter reads silu(g)·u from it: no SwiGLU rebuilt
    // for a kept layer, none recomputed for another.
    for (const kept of [n, 1]) {
      const swiglus = async (t: Trainer) => (await t.plan(2, 12, { mergeAdapter: true, keptLayers: kept, census: true })).census!.filter((o) => o.op === 'SWIGLU' && o.role !== 'fwd.mlp');
      assert.ok((await swiglus(others)).length > 0, `kept ${kept}: the three nodes rebuild the SwiGLU`);
      assert.deepEqual(await swiglus(all), [], `kept ${kept}`);
    }
    // Runs of our nodes: those of the three nodes (see the test above) and one more, layer 0's
    // q, k and v after ggml's RoPE backward; every other group joins a run.
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
      const st = await all.step(mixedBatch(), { lr: 0, ...stepOpts, ...extra });
      assert.equal(st.graphCustomRuns, Math.ceil(n / 2) + 2 * n + 2, `${JSON.stringify(extra)}: ${st.graphCustomRuns} runs`);
    }
    for (const t of [ops, lora, others, all]) t.dispose();
    model.dispose();
  });

  test("an adapter fused into its weight's product (fuseAdapter): finite differences, and the gradients of the adapter path", async () => {
    // f32 weights: the same sums in another order. Measured on the CPU: 1.1e-6 at most, 1.3e-5 with KL.
    const { model, tr, opts } = await checkAgainstPath('fused', { fuseAdapter: true }, { fuseAdapter: false });
    // With dropout each adapter reads its own masked input; W still reads x unmasked.
    const dropped = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3, dropout: 0.3 }, { lr: 1e-3 });
    setAll(dropped, tr.params());
    const da = await dropped.gradients(mixedBatch(), { ...opts, fuseAdapter: false });
    const db = await dropped.gradients(mixedBatch(), opts);
    assertSameGrads(da.grads, db.grads, deviceTol(1e-5, 1e-2), 'dropout (path vs fused)');
    // Fused, B (s A x) is no product of its own: the forward pass's LoRA products are the s A x
    // ones, one per input (q, k and v share theirs), and the frozen products reach over the
    // adapters' rows too.
    const c = model.info;
    const r = 4;
    const plan = async (o: { fuseAdapter?: boolean | 'bytes' }) => (await tr.plan(2, 12, { ...o, census: true })).census!;
    const flops = (census: OpCensus[], role: string) => census.filter((o) => o.role === role && o.op.startsWith('MUL_MAT')).reduce((a, o) => a + o.flops, 0);
    const T = 24;
    const [qOut, kvOut] = [c.nHead * c.headDim, c.nHeadKv * c.headDim];
    const path = await plan({ fuseAdapter: false });
    const fused = await plan({ fuseAdapter: true });
    assert.equal(flops(fused, 'fwd.lora'), 2 * r * T * c.nLayer * (3 * c.nEmbd + qOut + 2 * c.nEmbd + c.nFf)); // Σ n_in
    const extraK = 3 * r * (qOut + 2 * kvOut) + r * c.nEmbd + 2 * r * 2 * c.nFf + r * c.nEmbd; // Σ (rows added) · n_out
    assert.equal(flops(fused, 'fwd.W') - flops(path, 'fwd.W'), 2 * T * c.nLayer * extraK);
    assert.ok(!fused.some((o) => o.role === 'fwd.lora' && o.op === 'ADD'), 'no adapter output added');
    // Backward, the adapters' dx terms Aᵀ·da join a frozen product: r·k rows more per input
    // (layer 0's q/k/v dx is not computed at all: nothing needs the embeddings' gradient).
    const inRows = c.nLayer * (r * qOut + 2 * r * c.nEmbd + r * c.nFf) + (c.nLayer - 1) * 3 * r * c.nEmbd; // Σ r·k·n_in
    assert.equal(flops(fused, 'bwd.W') - flops(path, 'bwd.W'), 2 * T * inRows);
    assert.equal(flops(fused, 'bwd.W') + flops(fused, 'bwd.lora'), flops(path, 'bwd.W') + flops(path, 'bwd.lora'));
    // Always fusing, each group's dx is one product, [W₁ᵀ | W₂ᵀ | … | Aᵀ]·[dy₁ ; dy₂ ; … ; da]:
    // q/k/v (but in layer 0), o, gate/up and down, with nothing left to add.
    const count = (census: OpCensus[], role: string, op: string) => census.filter((o) => o.role === role && o.op.startsWith(op)).reduce((a, o) => a + o.count, 0);
    assert.equal(count(path, 'bwd.W', 'MUL_MAT'), 7 * c.nLayer - 3);
    assert.equal(count(fused, 'bwd.W', 'MUL_MAT'), 4 * c.nLayer - 1);
    assert.equal(count(fused, 'bwd.W', 'ADD'), 0);
    // 'bytes' fuses only where that moves fewer bytes: at 24 tokens none of this tiny model's, at
    // 512 some, for fewer bytes than fusing none or all.
    assert.deepEqual(await plan({ fuseAdapter: 'bytes' }), path);
    const bytes = async (o: { fuseAdapter: boolean | 'bytes' }) => (await tr.plan(8, 64, { ...o, census: true })).census!.reduce((a, x) => a + x.bytes, 0);
    const [none, some, all] = [await bytes({ fuseAdapter: false }), await bytes({ fuseAdapter: 'bytes' }), await bytes({ fuseAdapter: true })];
    assert.ok(some < none && some < all, `bytes moved: ${some} by bytes, ${none} never fused, ${all} always`);
    await assert.rejects(tr.gradients(mixedBatch(), { fuseAdapter: 'always' as never }), /fuseAdapter: expected true, false, 'bytes' or undefined/);
    dropped.dispose();
    tr.dispose();
    model.dispose();
  });

  test('flash attention (TrainerOptions.flashAttn): finite differences, and the gradients and log-probs of the plain path', async () => {
    // Head size 64 and two query heads per K/V head: ggml-cuda has a kernel for it, so with
    // RRR_TEST_DEVICE=cuda this runs the GPU's flash attention too.
    const { model } = await tinyModel('grad-flash', { nEmbd: 128, nHead: 2, nHeadKv: 1 });
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const plain = await Trainer.create(model, spec, { lr: 1e-3 }, { flashAttn: false });
    const flash = await Trainer.create(model, spec, { lr: 1e-3 }, { flashAttn: true });
    assert.equal(plain.info.flashAttn, false);
    assert.equal(flash.info.flashAttn, true);
    randomizeB(plain, 0.3);
    setAll(flash, plain.params());
    const opts = { logitsChunkRows: 4, microBatchTokens: 14 };
    await checkGradients(flash, mixedBatch(), opts);
    // Log-probs: the same attention, summed online (and on a GPU with K and V rounded to f16).
    const seqs = mixedBatch().map((s) => s.tokens);
    const [lpPlain, lpFlash] = [await plain.logprobs(seqs), await flash.logprobs(seqs)];
    lpPlain.forEach((row, i) => row.forEach((v, t) => assert.ok(Math.abs(v - lpFlash[i]![t]!) <= deviceTol(1e-4, 2e-2), `log-prob ${i}:${t}: ${v} vs ${lpFlash[i]![t]}`)));
    // Measured on the CPU: 2.0e-6 at most, 1.4e-5 with KL.
    await assertSameAcrossModes(
      'plain vs flash',
      (extra) => plain.gradients(mixedBatch(), { ...opts, ...extra }),
      (extra) => flash.gradients(mixedBatch(), { ...opts, ...extra }),
      3e-2,
    );
    // Every pass attends the same way, so a kept layer (which keeps the attention output) gives
    // old log-probs from logprobs() exactly: ratio 1.
    const old = await flash.logprobs(seqs);
    const r = await flash.gradients(mixedBatch().map((s, i) => ({ ...s, oldLogprobs: old[i]! })), { keptLayers: 1 });
    assert.ok(Math.abs(r.meanRatio - 1) <= deviceTol(1e-6, 1e-3), `mean ratio ${r.meanRatio}`);
    // Only a pass that takes attention back builds the probabilities: no softmax in the forward pass.
    const prof = (await flash.gradients(mixedBatch(), { profile: true })).profile!;
    const at = (role: string) => prof.filter((o) => o.role === role).map((o) => o.op);
    assert.ok(at('fwd.attn').includes('FLASH_ATTN_EXT') && !at('fwd.attn').includes('SOFT_MAX'), `fwd.attn: ${at('fwd.attn').join(', ')}`);
    assert.ok(at('re.attn').includes('FLASH_ATTN_EXT') && at('re.attn').includes('SOFT_MAX'), `re.attn: ${at('re.attn').join(', ')}`);
    const noRe = (await flash.gradients(mixedBatch(), { recompute: false, profile: true })).profile!;
    assert.ok(noRe.some((o) => o.role === 'bwd.attn' && o.op === 'SOFT_MAX'), 'without recomputation the backward pass builds the probabilities');
    // The census counts flash attention's two products: the same FLOPs as the plain path's, plus
    // the recomputed layers' Q Kᵀ for the backward pass's probabilities (2 hd L² per head).
    const { nLayer, nHead, headDim } = model.info;
    assert.equal((await plannedFlops(flash)) - (await plannedFlops(plain)), nLayer * 2 * 2 * nHead * headDim * 16 * 16);
    plain.dispose();
    flash.dispose();
    model.dispose();
  });

  test('the fused attention backward (fusedAttnBackward): finite differences, the gradients of ggml ops, no probabilities kept', async () => {
    // qwen2 with one K/V head per two query heads (a group summed into dK and dV), and head size
    // 64 so that a GPU also runs flash attention's forward beside it; qwen3 adds qk-norm.
    for (const [name, opts] of [
      ['qwen2', { nEmbd: 128, nHead: 2, nHeadKv: 1 }],
      ['qwen3', { arch: 'qwen3' as const }],
    ] as const) {
      const { model } = await tinyModel(`grad-fused-attn-${name}`, opts);
      const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
      for (const flashAttn of [false, true]) {
        if (flashAttn && name === 'qwen3' && ON_GPU) continue; // head size 16: no ggml-cuda flash kernel
        const ops = await Trainer.create(model, spec, { lr: 1e-3 }, { flashAttn });
        const fused = await Trainer.create(model, spec, { lr: 1e-3 }, { flashAttn, fusedAttnBackward: true });
        assert.equal(ops.info.fusedAttnBackward, false);
        assert.equal(fused.info.fusedAttnBackward, true);
        randomizeB(ops, 0.3);
        setAll(fused, ops.params());
        const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
        // ggml's ops first, so that a failure says which side parted (on an H200 the node's
        // check along B for qwen2 without flash attention parted by 2.1%: see FD_TOL).
        await checkGradients(ops, mixedBatch(), stepOpts, { label: `${name}, flash ${flashAttn}, ggml's ops` });
        await checkGradients(fused, mixedBatch(), stepOpts, { label: `${name}, flash ${flashAttn}, the node` });
        // On a GPU the node's products round to TF32 only for 16-bit and quantized models: these are f32.
        await assertSameAcrossModes(
          `${name}, flash ${flashAttn}: ggml ops vs fused`,
          (extra) => ops.gradients(mixedBatch(), { ...stepOpts, ...extra }),
          (extra) => fused.gradients(mixedBatch(), { ...stepOpts, ...extra }),
          3e-2,
        );
        // The GPU's steps (its products' strides and layouts; on the CPU in plain loops), one
        // sequence at a time: a work space smaller than one sequence's still holds one.
        const steps = await Trainer.create(model, spec, { lr: 1e-3 }, { flashAttn, fusedAttnBackward: true, attnWorkspaceMiB: 1e-3 });
        setAll(steps, ops.params());
        await assertSameAcrossModes(
          `${name}, flash ${flashAttn}: ggml ops vs the GPU's steps`,
          (extra) => ops.gradients(mixedBatch(), { ...stepOpts, ...extra }),
          (extra) => steps.gradients(mixedBatch(), { ...stepOpts, ...extra }),
          3e-2,
        );
        // Those take 14 and 10 positions in 2 query blocks each; 16 take 4 (attn_query_blocks).
        const sixteen: TrainSequence[] = [3, 41].map((o, b) => ({ tokens: seq(16, o), weights: new Float32Array(16).fill(b ? -0.6 : 1.1, 3) }));
        assertSameGrads((await ops.gradients(sixteen, { logitsChunkRows: 4 })).grads, (await steps.gradients(sixteen, { logitsChunkRows: 4 })).grads, deviceTol(1e-5, 3e-2), `${name}, flash ${flashAttn}: 4 query blocks`);
        steps.dispose();
        // One node takes attention back: no softmax gradient, no out_prod, no probabilities rebuilt.
        for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
          const prof = (await fused.gradients(mixedBatch(), { ...extra, profile: true })).profile!;
          const ops_ = (role: string) => prof.filter((o) => o.role === role).map((o) => o.op);
          assert.ok(ops_('bwd.attn').includes('CUSTOM'), `${JSON.stringify(extra)} bwd.attn: ${ops_('bwd.attn').join(', ')}`);
          for (const op of ['SOFT_MAX_BACK', 'OUT_PROD', 'SOFT_MAX']) {
            assert.ok(!ops_('bwd.attn').includes(op), `${JSON.stringify(extra)}: ${op} in bwd.attn`);
          }
          if (flashAttn) assert.ok(!prof.some((o) => o.role.endsWith('.attn') && o.op === 'SOFT_MAX'), `${JSON.stringify(extra)}: attention probabilities were built`);
        }
        // What it saves in memory: each layer's [L, L] probabilities per head, kept or rebuilt,
        // and their gradients (LM-head chunks small enough not to set the peak).
        const planOpts = { keptLayers: 1, logitsChunkRows: 16 };
        const [pOps, pFused] = [await ops.plan(1, 2048, planOpts), await fused.plan(1, 2048, planOpts)];
        assert.ok(pFused.deviceBytes < pOps.deviceBytes, `${name}, flash ${flashAttn}: planned ${pFused.deviceBytes} vs ${pOps.deviceBytes} bytes`);
        // The census counts the node's five products: with flash attention, the ones it replaces
        // (the probabilities rebuilt, dP, and dV, dQ, dK); without, a recomputed layer's
        // probabilities serve ggml's ops but not the node, which makes its own (2 hd L² a head).
        const { nLayer, nHead, headDim } = model.info;
        assert.equal((await plannedFlops(fused)) - (await plannedFlops(ops)), flashAttn ? 0 : nLayer * 2 * 2 * nHead * headDim * 16 * 16, `${name}, flash ${flashAttn}`);
        ops.dispose();
        fused.dispose();
      }
      model.dispose();
    }
  });

  test("the fused attention backward's f16 steps (fusedAttnF16): within f16 rounding of ggml ops, 28 bytes per [L, L] number", async () => {
    // Measured on the CPU (the GPU's steps in loops, every f16 number rounded as the GPU's): qwen2
    // 9.1e-4 from ggml ops' gradients at a largest of 2.37, qwen3 3.6e-4 of 0.87; the f32 steps
    // 6.0e-7 and 2.4e-7. Without KL: its e^(ref − lp) turns qwen2's rounding into 7.9e-3 at a
    // gradient of 0.021 (2.0e-2 at the largest, 45.8).
    for (const [name, opts] of [
      ['qwen2', { nEmbd: 128, nHead: 2, nHeadKv: 1 }],
      ['qwen3', { arch: 'qwen3' as const }],
    ] as const) {
      const { model } = await tinyModel(`attn-f16-${name}`, opts);
      const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
      const ops = await Trainer.create(model, spec, { lr: 1e-3 });
      const ws = { fusedAttnBackward: true, attnWorkspaceMiB: 1e-3 };
      const [s32, s16] = [await Trainer.create(model, spec, { lr: 1e-3 }, ws), await Trainer.create(model, spec, { lr: 1e-3 }, { ...ws, fusedAttnF16: true })];
      assert.deepEqual([s32.info.fusedAttnF16, s16.info.fusedAttnF16], [false, true]);
      await assert.rejects(Trainer.create(model, spec, { lr: 1e-3 }, { fusedAttnF16: true }), /fusedAttnF16: .*give fusedAttnBackward too$/);
      randomizeB(ops, 0.3);
      setAll(s32, ops.params());
      setAll(s16, ops.params());
      const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
      for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
        const o = { ...stepOpts, ...extra };
        const [a, b, c] = [await ops.gradients(mixedBatch(), o), await s32.gradients(mixedBatch(), o), await s16.gradients(mixedBatch(), o)];
        assertSameGrads(a.grads, c.grads, deviceTol(2e-3, 3e-2), `${name} ${JSON.stringify(extra)}: ggml ops vs the f16 steps`);
        const apart = largestDiff(b.grads, c.grads);
        assert.ok(apart > 1e-5, `${name} ${JSON.stringify(extra)}: f32 and f16 steps ${apart} apart`);
      }
      // The census: 28 bytes per [L, L] number where the f32 steps move 40 (op_profile.cpp), over
      // the (key, query) blocks the causal mask does not zero whole: at 16 positions 4 query
      // blocks, 10 of 16 blocks.
      const attnBytes = async (tr: Trainer) => (await tr.plan(2, 16, { census: true })).census!.filter((o) => o.role === 'bwd.attn' && o.op === 'CUSTOM').reduce((x, o) => x + o.bytes, 0);
      const { nLayer, nHead, nHeadKv, headDim } = model.info;
      const P = ((16 * 16 * 10) / 16) * nHead * 2, nq = headDim * nHead * 32, nkv = headDim * nHeadKv * 32;
      assert.equal(await attnBytes(s32), nLayer * (40 * P + 44 * nq + 52 * nkv));
      assert.equal(await attnBytes(s16), nLayer * (28 * P + 32 * nq + 42 * nkv));
      s32.dispose();
      s16.dispose();
      if (!ON_GPU) {
        // The CPU's own kernel (no work space) takes no copies: the flag changes nothing there.
        const [own32, own16] = [await Trainer.create(model, spec, { lr: 1e-3 }, { fusedAttnBackward: true }), await Trainer.create(model, spec, { lr: 1e-3 }, { fusedAttnBackward: true, fusedAttnF16: true })];
        setAll(own32, ops.params());
        setAll(own16, ops.params());
        assert.deepEqual((await own16.gradients(mixedBatch(), stepOpts)).grads, (await own32.gradients(mixedBatch(), stepOpts)).grads);
        own32.dispose();
        own16.dispose();
      }
      ops.dispose();
      model.dispose();
    }
  });

  test('the fused SwiGLU backward (fusedMlpBackward): finite differences, the gradients of ggml ops, one pass where there were three', async () => {
    const { model } = await tinyModel('grad-fused-mlp');
    const [ops, fused] = await opsAndNodes(model, { fusedMlpBackward: true });
    assert.deepEqual([ops.info.fusedMlpBackward, fused.info.fusedMlpBackward], [false, true]);
    const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
    await checkGradients(fused, mixedBatch(), stepOpts);
    // The same formula as ggml's SILU_BACK and SWIGLU, whose CPU kernels take exp() in SIMD
    // approximations: the same gradients up to those.
    for (const merge of [{}, { mergeAdapter: true }, { keptF16: true, keptLayers: 1 }]) {
      await assertSameAcrossModes(
        `ggml ops vs fused, ${JSON.stringify(merge)}`,
        (extra) => ops.gradients(mixedBatch(), { ...stepOpts, ...merge, ...extra }),
        (extra) => fused.gradients(mixedBatch(), { ...stepOpts, ...merge, ...extra }),
        3e-2,
      );
    }
    // In the profile: the node where MUL and SILU_BACK were, and a SWIGLU only where a kept layer rebuilds its activation.
    for (const extra of [{}, { keptLayers: 1 }, { recompute: false }]) {
      const prof = (await fused.gradients(mixedBatch(), { ...extra, profile: true })).profile!;
      const bwd = prof.filter((o) => o.role === 'bwd.mlp').map((o) => o.op);
      assert.ok(bwd.includes('CUSTOM'), `${JSON.stringify(extra)} bwd.mlp: ${bwd.join(', ')}`);
      for (const op of ['MUL', 'SILU_BACK']) assert.ok(!bwd.includes(op), `${JSON.stringify(extra)}: ${op} in bwd.mlp`);
    }
    // The census: per layer, three ops' 36 bytes a number of [n_ff, T] become the node's 20.
    const mlpBytes = async (tr: Trainer) => (await tr.plan(2, 16, { census: true })).census!.filter((o) => o.role === 'bwd.mlp').reduce((a, o) => a + o.bytes, 0);
    const { nLayer, nFf } = model.info;
    assert.equal((await mlpBytes(ops)) - (await mlpBytes(fused)), nLayer * 16 * nFf * 2 * 16);
    ops.dispose();
    fused.dispose();
    model.dispose();
  });

  test("the fused SwiGLU backward's 16-bit copies: gate's and up's dx products read them, no conversions of their own", async () => {
    // f16 weights: the products read their gradient in f16, merged into bf16 in bf16.
    const { model } = await tinyModel('fused-mlp-copies', { type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const { nLayer } = model.info;
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const ops = await Trainer.create(model, spec, { lr: 1e-3 });
    const fused = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedMlpBackward: true });
    const opsBf16 = await Trainer.create(model, spec, { lr: 1e-3 }, { mergeBf16: true });
    const fusedBf16 = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedMlpBackward: true, mergeBf16: true });
    randomizeB(ops, 0.3);
    for (const t of [fused, opsBf16, fusedBf16]) setAll(t, ops.params());
    const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
    const cases: [Trainer, Trainer, Omit<StepOptions, 'lr'>, string][] = [
      [ops, fused, {}, 'f16'],
      [ops, fused, { mergeAdapter: true }, 'f16'],
      [opsBf16, fusedBf16, { mergeAdapter: true }, 'bf16'],
      [opsBf16, fusedBf16, { mergeAdapter: true, keptLayers: 1 }, 'bf16'],
    ];
    for (const [a, b, extra, type] of cases) {
      const label = `${type} ${JSON.stringify(extra)}`;
      // The node's SwiGLU gradient against ggml's, rounded to 16 bits by either before the
      // products: measured on the CPU up to 3.2e-4 at a gradient of 1.56 unmerged, 1.2e-7 merged.
      // (Against the same node without its copies, the same bits in all four cases.)
      assertSameGrads((await a.gradients(mixedBatch(), { ...stepOpts, ...extra })).grads, (await b.gradients(mixedBatch(), { ...stepOpts, ...extra })).grads, deviceTol(5e-4, 3e-2), label);
      // Gate's and up's dx products (two a layer) multiply the copies; every other keeps its conversion.
      const census = async (t: Trainer) => (await t.plan(2, 12, { ...extra, census: true, censusKernels: 'cuda' })).census!.filter((o) => o.role === 'bwd.W');
      const count = (c: OpCensus[], op: string) => c.filter((o) => o.op === op).reduce((s, o) => s + o.count, 0);
      const [c0, c1] = [await census(a), await census(b)];
      const convert = `CONVERT f32 to ${type} (cuBLAS src1)`;
      assert.equal(count(c0, `MUL_MAT ${type} x ${type}`), 0, label);
      assert.equal(count(c1, `MUL_MAT ${type} x ${type}`), 2 * nLayer, label);
      assert.equal(count(c0, convert) - count(c1, convert), 2 * nLayer, label);
    }
    for (const t of [ops, fused, opsBf16, fusedBf16]) t.dispose();
    model.dispose();
  });

  test("the forward SwiGLU node: a merged 16-bit step writes silu(g)·u in the down product's type, the next layer's merges in its run", async () => {
    const { model } = await tinyModel('fused-mlp-forward', { type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const n = model.info.nLayer;
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const three = { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true };
    for (const mergeBf16 of [false, true]) {
      const tr = await Trainer.create(model, spec, { lr: 1e-3 }, { ...three, mergeBf16 });
      randomizeB(tr, 0.3);
      const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true };
      // Without recomputation the forward's SwiGLU is ggml's (its f32 result is kept): the node
      // and ggml's SWIGLU then converted gave the same gradient bits here (CPU), and with KL the
      // reference pass's roundings part by 4.3e-4 (f16) and 4.4e-3 (bf16) at gradients of 2.6.
      const label = `bf16 ${mergeBf16}`;
      for (const extra of [{}, { beta: 0.1 }]) {
        const [a, b] = [await tr.gradients(mixedBatch(), { ...stepOpts, ...extra, recompute: false }), await tr.gradients(mixedBatch(), { ...stepOpts, ...extra })];
        assertSameGrads(a.grads, b.grads, deviceTol('beta' in extra ? 5e-3 : 1e-5, 3e-2), `${label} ${JSON.stringify(extra)}`);
      }
      const mlp = async (o: Omit<StepOptions, 'lr'>) => (await tr.plan(2, 12, { ...o, mergeAdapter: true, census: true })).census!.filter((c) => c.role === 'fwd.mlp').map((c) => `${c.op} ${c.count}`);
      assert.deepEqual(await mlp({}), [`CUSTOM ${n}`], label);
      assert.deepEqual(await mlp({ recompute: false }), [`SWIGLU ${n}`], label);
      // Runs: layer 0's merges, then each layer's SwiGLU node with the next layer's merges
      // (n + 1 in the forward, where merges two layers at a time took ⌈n/2⌉), then the backward's 2n + 1.
      assert.equal((await tr.step(mixedBatch(), { lr: 0, ...stepOpts })).graphCustomRuns, n + 1 + 2 * n + 1, label);
      assert.equal((await tr.step(mixedBatch(), { lr: 0, ...stepOpts, recompute: false })).graphCustomRuns, Math.ceil(n / 2) + 2 * n + 1, label);
      tr.dispose();
    }
    model.dispose();
  });

  test("16-bit adapter gradients for the MLP (fusedLora16): only gate's, up's and down's change, within 16-bit rounding; the SwiGLU node writes 16 bits alone", async () => {
    const { model } = await tinyModel('lora-16', { type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const four = { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true, fusedLoraBackward: true };
    const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true };
    for (const mergeBf16 of [false, true]) {
      const [f32, h16] = await pairedTrainers(model, { ...four, mergeBf16 }, { ...four, mergeBf16, fusedLora16: true });
      assert.deepEqual([f32.info.fusedLora16, h16.info.fusedLora16], [false, true]);
      // Alone it would do nothing: refused, naming what it needs.
      for (const alone of [{ fusedLora16: true }, { fusedLora16: true, fusedLoraBackward: true }, { fusedLora16: true, fusedMlpBackward: true }]) {
        await assert.rejects(Trainer.create(model, spec, { lr: 1e-3 }, alone), /fusedLora16: .*give fusedLoraBackward and fusedMlpBackward too/);
      }
      const label = `bf16 ${mergeBf16}`;
      // Measured on the CPU: the MLP's A and B 3.8e-4 (f16) and 2.3e-3 (bf16) from the f32
      // products at gradients up to 1.56 (6.3e-4 and 5.5e-3 with KL at 2.6); every other
      // gradient the same bits.
      for (const extra of [{}, { beta: 0.1 }]) {
        const [a, b] = [await f32.gradients(mixedBatch(), { ...stepOpts, ...extra }), await h16.gradients(mixedBatch(), { ...stepOpts, ...extra })];
        const gu = (k: string) => /ffn_(gate|up|down)/.test(k);
        const pick = (g: Record<string, Float32Array>, want: boolean) => Object.fromEntries(Object.entries(g).filter(([k]) => gu(k) === want));
        assert.equal(largestDiff(pick(a.grads, false), pick(b.grads, false)), 0, `${label}: other adapters`);
        assert.ok(largestDiff(pick(a.grads, true), pick(b.grads, true)) > 0, `${label}: the MLP's adapters took 16-bit copies`);
        assertSameGrads(pick(a.grads, true), pick(b.grads, true), deviceTol(mergeBf16 ? 1e-2 : 2e-3, 3e-2), `${label} ${JSON.stringify(extra)}`);
      }
      // The SwiGLU node without its two f32 gradient planes and with silu(g)·u in 16 bits: 10
      // bytes a number fewer written (16 of f32 gradients, copies and silu(g)·u; 6).
      const mlpBytes = async (t: Trainer) => (await t.plan(2, 12, { mergeAdapter: true, census: true })).census!.filter((o) => o.role === 'bwd.mlp').reduce((x, o) => x + o.bytes, 0);
      const { nLayer, nFf } = model.info;
      assert.equal((await mlpBytes(f32)) - (await mlpBytes(h16)), nLayer * 24 * nFf * 10, label);
      f32.dispose();
      h16.dispose();
    }
    model.dispose();
  });

  test("the MLP's gate and up in 16 bits (gateUp16): within 16-bit rounding of f32 ones, 10 bytes a position fewer in the MLP; nothing changes unmerged", async () => {
    const { model } = await tinyModel('lora-16', { type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const four = { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true, fusedLoraBackward: true };
    for (const alone of [{ gateUp16: true }, { gateUp16: true, fusedLoraBackward: true }, { gateUp16: true, fusedMlpBackward: true }]) {
      await assert.rejects(Trainer.create(model, spec, { lr: 1e-3 }, alone), /gateUp16: .*give fusedLoraBackward and fusedMlpBackward too/);
    }
    for (const mergeBf16 of [false, true]) {
      const [f32, h16] = await pairedTrainers(model, { ...four, mergeBf16 }, { ...four, mergeBf16, gateUp16: true });
      assert.deepEqual([f32.info.gateUp16, h16.info.gateUp16], [false, true]);
      const label = `bf16 ${mergeBf16}`;
      // Unmerged, ggml's products run as without it: the same bits. Said, as a GPU's default
      // step merges a 16-bit base.
      const unmerged = { logitsChunkRows: 4, mergeAdapter: false };
      const [ua, ub] = [await f32.gradients(mixedBatch(), unmerged), await h16.gradients(mixedBatch(), unmerged)];
      assert.equal(largestDiff(ua.grads, ub.grads), 0, `${label}: unmerged`);
      // Merged: every gradient moves by the rounding of gate and up to 16 bits (every layer's
      // activations after the first MLP's depend on them). Measured on the CPU, largest
      // |a - b| / (|a| + 1): f16 1.3e-3 (4.7e-3 with KL), bf16 1.7e-2 (3.5e-2 with KL), the
      // same with every layer kept; losses within 3.2e-4 of each other, relative.
      for (const extra of [{}, { beta: 0.1 }, { recompute: false }]) {
        const opts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true, ...extra };
        const [a, b] = [await f32.gradients(mixedBatch(), opts), await h16.gradients(mixedBatch(), opts)];
        assert.ok(largestDiff(a.grads, b.grads) > 0, `${label}: gate and up took 16 bits`);
        assertSameGrads(a.grads, b.grads, deviceTol(mergeBf16 ? 6e-2 : 8e-3, 6e-2), `${label} ${JSON.stringify(extra)}`);
        assert.ok(Math.abs(a.loss - b.loss) <= 1e-3 * Math.abs(a.loss), `${label}: loss ${a.loss} vs ${b.loss}`);
        // Runs of ours (each two host waits on a GPU): recomputing, the products join the
        // forward SwiGLU node's run; without, where ggml's SWIGLU ran, each layer has one more.
        const more = 'recompute' in extra ? model.info.nLayer : 0;
        assert.equal(b.graphCustomRuns, a.graphCustomRuns + more, `${label} ${JSON.stringify(extra)}: runs of ours`);
      }
      // The planned step (every layer kept): the SwiGLU's backward node reads gate and up in 4
      // bytes a position where it read 8, and the forward's SwiGLU, ggml's (8 read, an f32 4
      // written) without the 16-bit products, is our node reading 4 and writing 2: 10 bytes a
      // position fewer in the MLP's roles, and fewer in all.
      const planned = async (t: Trainer) => {
        const p = await t.plan(2, 12, { mergeAdapter: true, census: true, recompute: false });
        return { bytes: p.census!.reduce((x, o) => x + o.bytes, 0), mlp: p.census!.filter((o) => /mlp/.test(o.role)).reduce((x, o) => x + o.bytes, 0) };
      };
      const [pa, pb] = [await planned(f32), await planned(h16)];
      const { nLayer, nFf } = model.info;
      assert.equal(pa.mlp - pb.mlp, nLayer * 24 * nFf * 10, label);
      assert.ok(pb.bytes < pa.bytes, `${label}: ${JSON.stringify([pa, pb])}`);
      f32.dispose();
      h16.dispose();
    }
    model.dispose();
  });

  test("the SwiGLU's gradient in 16 bits too (swigluGrad16): within 16-bit rounding of gateUp16's gradients, no more runs of ours, 4 bytes a number fewer on a GPU", async () => {
    const { model } = await tinyModel('lora-16', { type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
    const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
    const five = { fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true, fusedLoraBackward: true, gateUp16: true };
    await assert.rejects(Trainer.create(model, spec, { lr: 1e-3 }, { ...five, gateUp16: false, swigluGrad16: true }), /swigluGrad16: .*give gateUp16 too/);
    for (const mergeBf16 of [false, true]) {
      const [gu, sg] = await pairedTrainers(model, { ...five, mergeBf16 }, { ...five, mergeBf16, swigluGrad16: true });
      assert.deepEqual([gu.info.swigluGrad16, sg.info.swigluGrad16], [false, true]);
      const label = `bf16 ${mergeBf16}`;
      for (const extra of [{}, { beta: 0.1 }, { recompute: false }]) {
        const opts = { logitsChunkRows: 4, microBatchTokens: 14, mergeAdapter: true, ...extra };
        const [a, b] = [await gu.gradients(mixedBatch(), opts), await sg.gradients(mixedBatch(), opts)];
        assert.ok(largestDiff(a.grads, b.grads) > 0, `${label}: the gradient took 16 bits`);
        // Measured on the CPU, largest |a - b| / (|a| + 1) from gateUp16's: f16 1.1e-3 (2.0e-3
        // with KL), bf16 7.1e-3 (1.3e-2 with KL), the same with every layer kept.
        assertSameGrads(a.grads, b.grads, deviceTol(mergeBf16 ? 3e-2 : 4e-3, 6e-2), `${label} ${JSON.stringify(extra)}`);
        assert.equal(b.graphCustomRuns, a.graphCustomRuns, `${label} ${JSON.stringify(extra)}: runs of ours`);
      }
      const bytes = async (t: Trainer) => (await t.plan(2, 12, { mergeAdapter: true, census: true, censusKernels: 'cuda' })).census!.reduce((x, o) => x + o.bytes, 0);
      // As ggml-cuda runs its product: an f16 one writes f16 and converts it to f32 (2 + 2 + 4
      // bytes), a bf16 one writes f32 (4), where ours writes 2; the SwiGLU node reads 2, not 4.
      // The cast of the gradient our product reads is the conversion cuBLAS made of it.
      const { nLayer, nFf } = model.info;
      assert.equal((await bytes(gu)) - (await bytes(sg)), (mergeBf16 ? 4 : 8) * nLayer * 24 * nFf, label);
      gu.dispose();
      sg.dispose();
    }
    model.dispose();
  });

  test("the LM head's node (fusedHead): ggml's log-probs and gradients within 16-bit rounding, its GPU steps on the CPU, one op a micro-batch", async () => {
    // The tiny models' heads are 16-bit (their embeddings: f16, bf16 with bf16 weights), so the
    // node rounds h and -coef·p to the head's type for its products, as ggml rounds h and p;
    // the target's part, coef·W[t], stays f32 in both. Measured on the CPU, largest |a - b| /
    // (|a| + 1): f16 2.8e-5 (2.6e-4 with KL, whose e^(ref - lp) carries the log-probs' last bits
    // into gradients of rms 3.4); bf16 2.3e-3 (3.0e-3 with KL). Tolerances: plain, then KL.
    for (const [name, opts, tol, klTol] of [
      ['head-f16', { nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 2 }, 5e-5, 5e-4],
      ['head-bf16', { arch: 'llama', type: 'bf16', nEmbd: 128, nHead: 2, nHeadKv: 2, nLayer: 2 }, 5e-3, 1e-2],
    ] as const) {
      const { model } = await tinyModel(name, opts);
      const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
      const ops = await Trainer.create(model, spec, { lr: 1e-3 });
      const node = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedHead: true });
      const steps = await Trainer.create(model, spec, { lr: 1e-3 }, { fusedHead: true, fusedHeadSteps: true });
      assert.deepEqual([ops.info.fusedHead, node.info.fusedHead, steps.info.fusedHead], [false, true, true]);
      randomizeB(ops, 0.3);
      for (const t of [node, steps]) setAll(t, ops.params());
      const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
      // Old log-probs near the model's own: ratios of e^±0.05 (inside the clip) and e^±0.4 (past
      // it), at least 0.13 in log-prob from its edges (e^0.182 and e^-0.223). The two ways round
      // log-probs differently (on a GPU ggml's f16 logits part from the node's f32 ones by about
      // 1e-2), and a ratio nearer an edge would fall on either side of it, its token's gradient
      // there in one and gone in the other (an H200 parted so with ratios from 0.74 to 1.35).
      const lps = await ops.logprobs(mixedBatch().map((s) => s.tokens));
      const offsets = [0.05, -0.4, -0.05, 0.4];
      const withOld = mixedBatch().map((s, i) => ({ ...s, oldLogprobs: lps[i]!.map((x, j) => x + offsets[(3 * j + i) % 4]!) }));
      for (const [label, batch, extra] of [
        ['plain', mixedBatch(), {}],
        ['kl', mixedBatch(), { beta: 0.1 }],
        ['kept', mixedBatch(), { keptLayers: 1 }],
        ['ratio', withOld, {}],
        ['ratio+kl', withOld, { beta: 0.05 }],
      ] as const) {
        const what = `${name} ${label}`;
        const [a, b] = [await ops.gradients(batch, { ...stepOpts, ...extra }), await node.gradients(batch, { ...stepOpts, ...extra })];
        assert.ok(largestDiff(a.grads, b.grads) > 0, `${what}: the node took no part`);
        if (label.startsWith('ratio')) assert.ok(a.clipFraction > 0 && a.clipFraction < 1, `${what}: clip fraction ${a.clipFraction}`);
        assert.ok(Math.abs(a.clipFraction - b.clipFraction) <= 1e-9, `${what}: clip fraction ${a.clipFraction} vs ${b.clipFraction}`);
        assert.ok(Math.abs(a.loss - b.loss) <= deviceTol(1e-5, 1e-2) * Math.abs(a.loss), `${what}: loss ${a.loss} vs ${b.loss}`);
        assert.ok(Math.abs(a.meanRatio - b.meanRatio) <= deviceTol(1e-5, 1e-2), `${what}: mean ratio ${a.meanRatio} vs ${b.meanRatio}`);
        assertSameGrads(a.grads, b.grads, deviceTol('beta' in extra ? klTol : tol, 3e-2), `${what}: ggml's ops vs the node`);
        // The GPU's steps (chunks of 4 rows, -coef·p over the logits' own bytes) in slow loops:
        // the plain loss and every term of the coefficient at once. Measured on the CPU, largest
        // |a - b| / (|a| + 1) with KL: f16 4.2e-6, bf16 6.2e-4 (its -coef·p rounded to bf16).
        if (label === 'plain' || label === 'ratio+kl') {
          const c = await steps.gradients(batch, { ...stepOpts, ...extra });
          assertSameGrads(b.grads, c.grads, deviceTol('beta' in extra ? 1e-3 : 1e-5, 3e-2), `${what}: the node's own loops vs its steps`);
        }
      }
      // Log-prob passes (no backward): the same log-probs.
      const seqs = mixedBatch().map((s) => s.tokens);
      const [la, lb, lc] = [await ops.logprobs(seqs), await node.logprobs(seqs), await steps.logprobs(seqs)];
      for (let i = 0; i < la.length; i++) {
        la[i]!.forEach((x, j) => {
          assert.ok(Math.abs(x - lb[i]![j]!) <= deviceTol(1e-5, 1e-2) * (1 + Math.abs(x)) && Math.abs(x - lc[i]![j]!) <= deviceTol(1e-5, 1e-2) * (1 + Math.abs(x)), `${name} log-prob ${i}.${j}: ${x} ${lb[i]![j]} ${lc[i]![j]}`);
        });
      }
      // One node a micro-batch where ggml took a dozen ops a chunk; the same FLOPs (two
      // products over every loss row), no softmax, no transposed head.
      const head = async (t: Trainer) => (await t.plan(2, 12, { logitsChunkRows: 4, census: true })).census!.filter((o) => o.role.startsWith('head'));
      const [before, after] = [await head(ops), await head(node)];
      const count = (c: OpCensus[]) => c.reduce((x, o) => x + o.count, 0);
      const flops = (c: OpCensus[]) => c.reduce((x, o) => x + o.flops, 0);
      assert.equal(after.find((o) => o.op === 'CUSTOM')?.count, 1);
      assert.ok(!after.some((o) => o.op === 'SOFT_MAX' || o.op.startsWith('MUL_MAT')), JSON.stringify(after));
      assert.equal(flops(after), flops(before));
      assert.ok(count(after) < count(before) / 4, `${count(after)} ops against ${count(before)}`);
      for (const t of [ops, node, steps]) t.dispose();
      model.dispose();
    }
  });

  test("the norms' backward nodes (fusedNormBackward): ggml's gradients, one op a norm where there were four or five", async () => {
    // f32 weights: the same sums in another order. qwen3's per-head q and k norms keep ggml's ops.
    for (const arch of ['qwen2', 'qwen3'] as const) {
      const { model } = await tinyModel(`norm-nodes-${arch}`, { arch, nEmbd: 128, nHead: 2, nHeadKv: 1, nLayer: 3 });
      const n = model.info.nLayer;
      const [ops, node] = await opsAndNodes(model, { fusedNormBackward: true });
      assert.deepEqual([ops.info.fusedNormBackward, node.info.fusedNormBackward], [false, true]);
      const stepOpts = { logitsChunkRows: 4, microBatchTokens: 14 };
      for (const extra of [{}, { keptLayers: 1 }, { recompute: false }, { beta: 0.1 }, { mergeAdapter: true }, { fuseAdapter: true }]) {
        const what = `${arch} ${JSON.stringify(extra)}`;
        const [a, b] = [await ops.gradients(mixedBatch(), { ...stepOpts, ...extra }), await node.gradients(mixedBatch(), { ...stepOpts, ...extra })];
        assert.ok(largestDiff(a.grads, b.grads) > 0, `${what}: the nodes took no part`);
        assertSameGrads(a.grads, b.grads, deviceTol('beta' in extra ? 1e-4 : 1e-5, 3e-2), `${what}: ggml's ops vs the norms' nodes`);
      }
      // Each layer's two norms, but layer 0's attention norm (nothing needs dL/d(embeddings)), a
      // node of ours and a run of its own; no RMS_NORM_BACK left there, fewer ops and bytes.
      const census = async (t: Trainer) => (await t.plan(2, 12, { census: true })).census!.filter((o) => o.role === 'bwd.norm');
      const [before, after] = [await census(ops), await census(node)];
      assert.equal(after.find((o) => o.op === 'CUSTOM')?.count, 2 * n - 1);
      assert.ok(!after.some((o) => o.op === 'RMS_NORM_BACK' && arch === 'qwen2'), JSON.stringify(after));
      const sum = (c: OpCensus[], k: 'count' | 'bytes') => c.reduce((x, o) => x + o[k], 0);
      assert.ok(sum(after, 'bytes') < sum(before, 'bytes') && sum(after, 'count') < sum(before, 'count'), `${JSON.stringify(after)} against ${JSON.stringify(before)}`);
      assert.equal((await node.step(mixedBatch(), { lr: 0, ...stepOpts, microBatchTokens: 0 })).graphCustomRuns, 2 * n - 1);
      ops.dispose();
      node.dispose();
      model.dispose();
    }
  });

});

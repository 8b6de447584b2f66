// Where the graphs run. On a GPU build every op of generation (prefill, prompt copy into KV
// streams, decode, the in-graph sampling head) and of a training step (log-prob pass, forward +
// backward through frozen f16 / bf16 / quantized weights, gradient norm, AdamW) must run on the
// GPU: an op the GPU backend cannot run falls back to the CPU and costs a bus round trip per
// step. Run with RRR_TEST_DEVICE=cuda (scripts/device/gpu-check.sh does) these are the GPU
// placement checks; on the CPU they check the report itself (one piece, nothing elsewhere).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, Model, Trainer } from '../src/engine/index.js';
import type { LoraTarget, TrainSequence } from '../src/engine/types.js';
import { TEST_DEVICE, tinyModel } from './helpers/models.js';

// ggml's scheduler (GGML_SCHED_MAX_SPLIT_INPUTS) cuts a GPU graph that reads more host inputs.
const MAX_HOST_INPUTS = 30;
const onDevice = (what: string, s: { graphSplits: number; graphHostInputs: number; fallbackOps: string[] }) => {
  assert.deepEqual(s.fallbackOps, [], `${what}: ops placed off ${TEST_DEVICE}`);
  assert.ok(s.graphHostInputs > 0 && s.graphHostInputs <= MAX_HOST_INPUTS, `${what}: ${s.graphHostInputs} host inputs`);
  assert.equal(s.graphSplits, 1, `${what}: graph cut into ${s.graphSplits} pieces`);
};

test('generation graphs run wholly on the compute device, in both KV layouts, with and without flash attention', async () => {
  // Head dim 64: ggml-cuda's flash attention has no kernel for the tiny default's 16 (it would fall back).
  const model = await Model.load(await tinyModel({ arch: 'qwen2', nEmbd: 128, nHead: 2, nHeadKv: 1 }), { device: TEST_DEVICE });
  try {
    const requests = [
      { prompt: model.tokenize('Use 3, 5 and 7 to make 22.'), n: 3 },
      { prompt: model.tokenize('Hi'), n: 2 },
    ];
    for (const kvLayout of ['streams', 'unified'] as const) {
      for (const flashAttn of [true, false]) {
        const gen = await Generator.create(model, { maxSeqs: 5, nCtx: 64, kvLayout, flashAttn, deviceSampling: true });
        try {
          // Greedy and temperature sample in the graph; top-p brings logits rows back to the host.
          for (const [mode, opts] of [['greedy', { temperature: 0 }], ['temperature', { temperature: 0.8, seed: 3 }], ['top-p', { temperature: 0.8, topP: 0.9, seed: 3 }]] as const) {
            await gen.generate(requests, { maxTokens: 12, ignoreEos: true, ...opts });
            onDevice(`${kvLayout} KV, flash attention ${flashAttn ? 'on' : 'off'}, ${mode}`, gen.lastStats!);
          }
        } finally {
          gen.dispose();
        }
      }
    }
  } finally {
    model.dispose();
  }
});

test('flash attention is on by default only on a GPU with a kernel for the head size', async () => {
  const cases = [
    { opts: { arch: 'qwen2' as const }, kernel: false }, // head dim 16: no ggml-cuda kernel
    { opts: { arch: 'qwen2' as const, nEmbd: 128, nHead: 2, nHeadKv: 1 }, kernel: true },
  ];
  for (const c of cases) {
    const model = await Model.load(await tinyModel(c.opts), { device: TEST_DEVICE });
    const gen = await Generator.create(model, { maxSeqs: 2, nCtx: 64 });
    try {
      assert.equal(gen.info.flashAttn, TEST_DEVICE === 'cuda' && c.kernel, `head dim ${model.info.headDim}`);
      await gen.generate([{ prompt: model.tokenize('Hi'), n: 2 }], { maxTokens: 8, temperature: 0, ignoreEos: true });
      onDevice(`default flash attention, head dim ${model.info.headDim}`, gen.lastStats!);
    } finally {
      gen.dispose();
      model.dispose();
    }
  }
});

test('training passes use flash attention by default only on a GPU with a kernel, and run wholly on the compute device with it', async () => {
  const spec = { rank: 4, alpha: 8, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const, seed: 1 };
  const cases = [
    { opts: { arch: 'qwen2' as const, type: 'f16' }, kernel: false }, // head dim 16: no ggml-cuda kernel
    { opts: { arch: 'qwen2' as const, type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1 }, kernel: true },
  ];
  for (const c of cases) {
    const model = await Model.load(await tinyModel(c.opts), { device: TEST_DEVICE });
    const batch: TrainSequence[] = [0, 1].map((b) => ({
      tokens: Int32Array.from({ length: 24 }, (_, i) => (i * 37 + b * 11 + 5) % model.info.nVocab),
      weights: new Float32Array(24).fill(b ? -0.5 : 1),
    }));
    const dflt = await Trainer.create(model, { ...spec, targets: [...spec.targets] }, { lr: 1e-3 });
    try {
      assert.equal(dflt.info.flashAttn, TEST_DEVICE === 'cuda' && c.kernel, `head dim ${model.info.headDim}`);
      if (TEST_DEVICE === 'cuda' && !c.kernel) {
        await assert.rejects(
          Trainer.create(model, { ...spec, targets: [...spec.targets] }, { lr: 1e-3 }, { flashAttn: true }),
          /flashAttn: \S+ has no flash-attention kernel for this model's heads \(head size 16\)/,
        );
        continue;
      }
      const tr = await Trainer.create(model, { ...spec, targets: [...spec.targets] }, { lr: 1e-3 }, { flashAttn: true });
      try {
        assert.equal(tr.info.flashAttn, true);
        onDevice(`head dim ${model.info.headDim}: flash log-prob pass`, await tr.evaluate(batch));
        for (const o of [{ beta: 0.05 }, { keptLayers: 1, fuseAdapter: true }, { recompute: false }]) {
          const st = await tr.step(batch, { lr: 1e-3, ...o });
          assert.ok(Number.isFinite(st.loss) && st.gradNorm > 0, JSON.stringify(st));
          onDevice(`head dim ${model.info.headDim}: flash training step ${JSON.stringify(o)}`, st);
        }
      } finally {
        tr.dispose();
      }
    } finally {
      dflt.dispose();
      model.dispose();
    }
  }
});

test("our nodes (attention, SwiGLU, merges, LM head, norms) run on the compute device: on a GPU, as the scheduler's pieces between ggml-cuda's, or with nodeWaits 'device' our backend fronting ggml-cuda in one piece", async () => {
  const model = await Model.load(await tinyModel({ arch: 'qwen2', type: 'f16', nEmbd: 128, nHead: 2, nHeadKv: 1 }), { device: TEST_DEVICE });
  try {
    // Runs of our nodes in the graph (StepResult.graphCustomRuns): one per layer for the
    // attention's and the SwiGLU's; merges (a GPU's default step with f16 weights merges, the
    // CPU's does not) two layers at a time in the forward pass and one layer at a time in the
    // backward; all three: the merges for the backward of the layer below beside each attention
    // node, the top layer's alone. On a GPU each run of ours is a piece of the scheduler's
    // between two of ggml-cuda's; with nodeWaits 'device' our backend takes the whole graph and
    // hands ggml-cuda the runs between ours.
    const n = model.info.nLayer;
    const merges = TEST_DEVICE === 'cuda';
    const spec = { rank: 4, alpha: 8, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as LoraTarget[], seed: 1 };
    const batch: TrainSequence[] = [0, 1].map((b) => ({
      tokens: Int32Array.from({ length: 24 }, (_, i) => (i * 37 + b * 11 + 5) % model.info.nVocab),
      weights: new Float32Array(24).fill(b ? -0.5 : 1),
    }));
    const steps = [{}, { beta: 0.05 }, { keptLayers: 1 }, { recompute: false }];
    for (const [nodes, runs] of [
      [{ fusedAttnBackward: true }, n],
      [{ fusedAttnBackward: true, fusedAttnF16: true }, n],
      [{ fusedMlpBackward: true }, n],
      [{ fusedMerge: true }, merges ? Math.ceil(n / 2) + n : 0],
      [{ fusedMerge: true, mergeBf16: true }, merges ? Math.ceil(n / 2) + n : 0],
      [{ fusedAttnBackward: true, fusedMlpBackward: true, fusedMerge: true }, merges ? Math.ceil(n / 2) + 2 * n + 1 : 2 * n],
      // the LM head's node: one run between the forward and the backward
      [{ fusedHead: true }, 1],
      // the norms' backward nodes: each a run, all but layer 0's attention norm
      [{ fusedNormBackward: true }, 2 * n - 1],
    ] as const) {
      const losses: number[] = [];
      for (const nodeWaits of TEST_DEVICE === 'cuda' ? (['host', 'device'] as const) : [undefined]) {
        const tr = await Trainer.create(model, spec, { lr: 1e-3 }, { ...nodes, nodeWaits });
        try {
          assert.deepEqual(
            [tr.info.fusedAttnBackward, tr.info.fusedMlpBackward, tr.info.fusedMerge, tr.info.nodeWaits],
            [...['fusedAttnBackward', 'fusedMlpBackward', 'fusedMerge'].map((k) => k in nodes), nodeWaits ?? 'host'],
          );
          for (const [k, o] of steps.entries()) {
            const st = await tr.step(batch, { lr: 1e-3, ...o });
            const what = `${JSON.stringify(nodes)} ${JSON.stringify(o)} nodeWaits ${nodeWaits}`;
            assert.ok(Number.isFinite(st.loss) && st.gradNorm > 0, `${what}: ${JSON.stringify(st)}`);
            assert.deepEqual(st.fallbackOps, [], `${what}: ops placed off ${TEST_DEVICE}`);
            assert.ok(st.graphHostInputs > 0 && st.graphHostInputs <= MAX_HOST_INPUTS, `${what}: ${st.graphHostInputs} host inputs`);
            assert.equal(st.graphCustomRuns, runs, `${what}: runs of our nodes`);
            // The compute buffer is held by whichever backend on the GPU's buffers comes first (ours, fronting).
            assert.ok(st.computeBytes > 0, `${what}: compute buffer ${st.computeBytes} bytes`);
            if (nodeWaits === 'device') {
              assert.equal(st.graphSplits, 1, `${what}: graph cut into ${st.graphSplits} pieces`);
              // The same kernels in the same order, only the waits between them moved.
              assert.equal(st.loss, losses[k], `${what}: loss against the host's waits`);
            } else {
              if (TEST_DEVICE === 'cuda') assert.ok(st.graphSplits >= 2 * runs + 1, `${what}: ${st.graphSplits} pieces for ${runs} runs of ours`);
              else assert.equal(st.graphSplits, 1, `${what}: graph cut into ${st.graphSplits} pieces`);
              losses.push(st.loss);
            }
          }
        } finally {
          tr.dispose();
        }
      }
    }
    if (TEST_DEVICE !== 'cuda') {
      // Nothing to wait for without a GPU: said, not ignored.
      for (const nodeWaits of ['host', 'device'] as const) {
        await assert.rejects(Trainer.create(model, spec, { lr: 1e-3 }, { fusedMlpBackward: true, nodeWaits }), /nodeWaits: .*needs a GPU/);
      }
    }
  } finally {
    model.dispose();
  }
});

for (const type of ['f16', 'bf16', 'q8_0', 'q4_0']) {
  test(`a training step on a ${type} base runs wholly on the compute device`, async () => {
    const model = await Model.load(await tinyModel({ arch: 'qwen2', type, seed: 5 }), { device: TEST_DEVICE });
    assert.equal(model.info.weightType, type);
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], seed: 1 }, { lr: 1e-3 });
    try {
      const batch: TrainSequence[] = [0, 1].map((b) => ({
        tokens: Int32Array.from({ length: 24 }, (_, i) => (i * 37 + b * 11 + 5) % model.info.nVocab),
        weights: new Float32Array(24).fill(b ? -0.5 : 1),
      }));
      const old = await tr.evaluate(batch);
      onDevice(`${type}: log-prob pass`, old);
      // KL to the base model adds its own pass with the adapter off.
      const st = await tr.step(batch, { lr: 1e-3, beta: 0.05 });
      assert.ok(Number.isFinite(st.loss) && st.gradNorm > 0, JSON.stringify(st));
      // Unless told, a GPU merges the adapter into f16 weights (StepOptions.mergeAdapter).
      assert.equal(st.adapterMerged, model.info.gpu && type === 'f16', `${type}: adapter merged by default`);
      assert.equal((await tr.plan(2, 24)).adapterMerged, st.adapterMerged, `${type}: plan settles the merge as the step does`);
      assert.equal((await tr.step(batch, { lr: 0, fuseAdapter: 'bytes' })).adapterMerged, false, `${type}: fusing asked for, not merged`);
      onDevice(`${type}: training step`, st);
      // Kept layers rebuild their cheap parts in the backward pass; a budget splits the batch.
      const kept = await tr.step(batch, { lr: 1e-3, keptLayers: 1 });
      onDevice(`${type}: training step with a kept layer`, kept);
      const plan = await tr.plan(1, 24);
      const split = await tr.step(batch, { lr: 1e-3, memoryBudget: plan.deviceBytes, keptLayers: 'auto' });
      assert.ok(split.microBatches === 2, `${split.microBatches} micro-batches within ${plan.deviceBytes} bytes`);
      onDevice(`${type}: training step in micro-batches`, split);
      // Merging the adapter adds f16 + f32 sums, bf16 casts and (quantized) dequantisation.
      const merged = await tr.step(batch, { lr: 1e-3, beta: 0.05, mergeAdapter: true });
      assert.ok(Number.isFinite(merged.loss) && merged.gradNorm > 0, JSON.stringify(merged));
      onDevice(`${type}: training step with the adapter merged`, merged);
      onDevice(`${type}: log-prob pass with the adapter merged`, await tr.evaluate(batch, { mergeAdapter: true }));
      // Fusing the adapter into the weights' products pads and casts B and concatenates weights
      // and inputs (quantized bases keep the adapter path).
      const fused = await tr.step(batch, { lr: 1e-3, beta: 0.05, fuseAdapter: true });
      assert.ok(Number.isFinite(fused.loss) && fused.gradNorm > 0, JSON.stringify(fused));
      onDevice(`${type}: training step with the adapter fused`, fused);
      // LoRA dropout draws its masks in the graph (OUT_PROD, SIN, STEP).
      const dropped = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], seed: 1, dropout: 0.1 }, { lr: 1e-3 });
      try {
        const d = await dropped.step(batch, { lr: 1e-3 });
        assert.ok(Number.isFinite(d.loss) && d.gradNorm > 0, JSON.stringify(d));
        onDevice(`${type}: training step with LoRA dropout`, d);
      } finally {
        dropped.dispose();
      }
    } finally {
      tr.dispose();
      model.dispose();
    }
  });
}

// The bench's LoRA training rows: fwd + bwd + AdamW steps of B x L tokens, rank 16 on all
// seven projections (the workload of DESIGN.md's PEFT anchor), with the memory it took.
import { gpuMemoryFree } from '../../engine/devices.js';
import { Trainer } from '../../engine/trainer.js';
import { RrrError } from '../../engine/errors.js';
import { formatRate } from '../progress.js';
import { ALL_NODES, budgetInFlags, inFlags, flashAttnOption, fuseAdapterOption } from '../step-flags.js';
import { budgetBytes } from '../flag-checks.js';
import type { OpCensus, OpTime } from '../../engine/types.js';
import type { BenchReport, BenchSection } from './bench.js';

const mib = (b: number) => (b / 2 ** 20).toFixed(0);

/** Sums the numeric `fields` of the entries that share key(entry), one group per key. */
function sumBy<T extends Record<F, number>, F extends string>(items: T[], key: (t: T) => string, fields: readonly F[]): ({ name: string } & Record<F, number>)[] {
  const by = new Map<string, Record<F, number>>();
  for (const t of items) {
    const name = key(t);
    let sums = by.get(name);
    if (!sums) by.set(name, (sums = Object.fromEntries(fields.map((f) => [f, 0])) as Record<F, number>));
    for (const f of fields) sums[f] += t[f];
  }
  return [...by].map(([name, sums]) => ({ name, ...sums }));
}

/** A profile's (op, role) entries summed by `key`, slowest first. */
const groupOps = (ops: OpTime[], key: (o: OpTime) => string) => sumBy(ops, key, ['count', 'ms'] as const).sort((a, b) => b.ms - a.ms);

type CensusGroup = { name: string; count: number; bytes: number; flops: number };

/** A census's (op, role) entries summed by `key`, most bytes first. */
const groupCensus = (ops: OpCensus[], key: (o: OpCensus) => string): CensusGroup[] =>
  sumBy(ops, key, ['count', 'bytes', 'flops'] as const).sort((a, b) => b.bytes - a.bytes);

const censusTotals = (ops: OpCensus[]) => groupCensus(ops, () => 'all')[0] ?? { name: 'all', count: 0, bytes: 0, flops: 0 };

const bytesText = (b: number) => (b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : `${(b / 1e6).toFixed(1)} MB`);
const flopsText = (f: number) => (f >= 1e12 ? `${(f / 1e12).toFixed(2)} TFLOP` : `${(f / 1e9).toFixed(2)} GFLOP`);

const censusLines = (groups: CensusGroup[], total: number) =>
  groups
    .slice(0, 12)
    .map((g) => `  ${g.name.padEnd(28)} ${String(g.count).padStart(6)} x ${bytesText(g.bytes).padStart(10)} ${((100 * g.bytes) / total).toFixed(1).padStart(5)}%${g.flops ? `  ${flopsText(g.flops)}` : ''}`);

/** Per role, slowest first: profiled ms beside the census's bytes and FLOPs for it. */
function rateLines(profiled: OpTime[], census: OpCensus[]): string[] {
  const work = new Map(groupCensus(census, (o) => o.role).map((g) => [g.name, g]));
  return groupOps(profiled, (o) => o.role)
    .slice(0, 12)
    .map((g) => {
      const w = work.get(g.name);
      const gbs = w && g.ms > 0 ? `${(w.bytes / 1e6 / g.ms).toFixed(0)} GB/s` : '-';
      const tfs = w?.flops && g.ms > 0 ? `, ${(w.flops / 1e9 / g.ms).toFixed(1)} TFLOP/s` : '';
      return `  ${g.name.padEnd(28)} ${g.ms.toFixed(1).padStart(9)} ms ${(w ? bytesText(w.bytes) : '-').padStart(10)}  ${gbs}${tfs}`;
    });
}

const profileLines = (groups: { name: string; count: number; ms: number }[], total: number) =>
  groups.slice(0, 12).map((g) => `  ${g.name.padEnd(28)} ${String(g.count).padStart(6)} x ${g.ms.toFixed(1).padStart(9)} ms  ${((100 * g.ms) / total).toFixed(1).padStart(5)}%`);

export const trainingSection: BenchSection = {
  key: 'lora-training-step',
  async run({ model, args }): Promise<BenchReport> {
    const title = 'LoRA training step (fwd + bwd + AdamW, r=16 on q,k,v,o,gate,up,down)';
    if (!args.train) return { title, headers: ['workload', 'tok/s'], rows: [['skipped (--no-train)', '-']], notes: [], data: null };
    const B = args['train-batch'];
    const L = Math.min(args['train-len'], model.info.nCtxTrain);
    const free0 = gpuMemoryFree();
    const rss0 = process.memoryUsage().rss;
    // ggml-cuda reads this at every cuBLAS product; set for the training rows only, restored after.
    const cublasBefore = process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
    if (args['train-cublas'] !== 'auto') process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = args['train-cublas'];
    // The fused attention backward's work space as asked (the device's default otherwise), for the trainer and the report.
    const workspace = args['train-attn-workspace-mib'] !== undefined ? { attnWorkspaceMiB: args['train-attn-workspace-mib'] } : {};
    const restoreCublas = () => {
      if (cublasBefore === undefined) delete process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
      else process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = cublasBefore;
    };
    const own = { transposedWeights: '--train-transposed', fusedHeadSteps: '--train-fused-head-steps', attnWorkspaceMiB: '--train-attn-workspace-mib' };
    const tr = await Trainer.create(model, { rank: 16, alpha: 32, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], seed: 1 }, { lr: 1e-4 }, {
      transposedWeights: args['train-transposed'],
      flashAttn: flashAttnOption(args['flash-attn']),
      fusedAttnBackward: args['train-fused-attn-backward'],
      fusedMlpBackward: args['train-fused-mlp-backward'],
      fusedMerge: args['train-fused-merge'],
      fusedLoraBackward: args['train-fused-lora-backward'],
      fusedLora16: args['train-fused-lora-16'],
      mergeBf16: args['train-merge-bf16'],
      fusedAttnF16: args['train-fused-attn-f16'],
      fusedHead: args['train-fused-head'],
      fusedNormBackward: args['train-fused-norm-backward'],
      gateUp16: args['train-gate-up-16'],
      swigluGrad16: args['train-swiglu-grad-16'],
      ...(args['train-node-waits'] !== undefined && { nodeWaits: args['train-node-waits'] }),
      ...(args['train-fused-head-steps'] !== undefined && { fusedHeadSteps: args['train-fused-head-steps'] }),
      ...workspace,
      ...(args['train-all-nodes'] && ALL_NODES),
    }).catch((e: unknown) => {
      restoreCublas();
      throw inFlags(e, '--train-', own, args['train-all-nodes'] ? '--train-all-nodes' : undefined);
    });
    const flash = `${tr.info.flashAttn ? ', flash attention' : ''}${tr.info.fusedAttnBackward ? `, fused attention backward${tr.info.fusedAttnF16 ? ' (f16 products)' : ''}` : ''}${tr.info.fusedMlpBackward ? ', fused SwiGLU backward' : ''}${tr.info.fusedHead ? ', LM head and loss by our node' : ''}${tr.info.fusedNormBackward ? ", norms' backward by our nodes" : ''}${tr.info.gateUp16 ? `, gate and up${tr.info.swigluGrad16 ? " and the SwiGLU's gradient" : ''} in 16 bits where merged into 16-bit weights` : ''}${tr.info.nodeWaits === 'device' ? ', our nodes and ggml-cuda waiting on the device' : ''}`;
    const mergeNode = `${tr.info.fusedMerge ? ' by our merge node (--train-fused-merge)' : ''}${tr.info.mergeBf16 ? ', merged weights in bf16 (--train-merge-bf16)' : ''}${tr.info.fusedLoraBackward ? `, adapters' gradients by our nodes (--train-fused-lora-backward${tr.info.fusedLora16 ? ", the MLP's in 16 bits" : ''})` : ''}`;
    try {
      // Advantages of both signs, every token trained: the heaviest case of an RRR batch.
      const batch = Array.from({ length: B }, (_, b) => ({
        tokens: Int32Array.from({ length: L }, (_, i) => (i * 7919 + b * 31) % model.info.nVocab),
        weights: new Float32Array(L).fill(b % 2 ? 1 : -1),
      }));
      const base = {
        recompute: args['train-recompute'],
        logitsChunkRows: args['train-chunk-rows'],
        mergeAdapter: args['train-merge-adapter'],
        fuseAdapter: fuseAdapterOption(args['train-fuse-adapter']),
        keptF16: args['train-kept-f16'],
        keptNorms: args['train-kept-norms'],
        microBatchTokens: args['train-micro-batch-tokens'],
      };
      // Everything but the compute buffer, for --train-memory-gib: the adapter's A and B, their
      // gradients and two AdamW moments (4 x f32 each), and on a GPU room for cuBLAS and conversions.
      const fixedBytes = model.info.weightBytes + tr.info.transposedWeightsBytes + 16 * tr.info.nParams + (model.info.gpu ? 512 * 2 ** 20 : 0);
      // With a budget, the trainer settles micro-batches and kept layers once, by plan; the timed
      // steps then run with what it settled, without planning again.
      const gib = args['train-memory-gib'];
      if (gib !== undefined && gib * 2 ** 30 <= fixedBytes) {
        throw new RrrError(`--train-memory-gib ${gib}: the model, the adapter and its optimizer state${model.info.gpu ? ' and room for cuBLAS' : ''} take ${(fixedBytes / 2 ** 20).toFixed(1)} MiB of it before any compute buffer`);
      }
      const budget = gib !== undefined ? budgetBytes(gib) - fixedBytes : 0;
      const plan = await tr.plan(B, L, {
        ...base,
        ...(budget
          ? { memoryBudget: budget, keptLayers: args['train-recompute'] ? ('auto' as const) : 0, keptSplit: args['train-kept-split'] }
          : { keptLayers: args['train-kept-layers'] }),
        census: args['train-census'],
        ...(args['train-census-kernels'] !== 'auto' && { censusKernels: args['train-census-kernels'] }),
      });
      // What the step settles the merge and fusing to (StepOptions.mergeAdapter, fuseAdapter).
      const merged = plan.adapterMerged;
      const fuseSetting = plan.fuseAdapter === 'bytes' ? 'bytes' : plan.fuseAdapter ? 'on' : 'off';
      const fusedNote = merged || fuseSetting === 'off' ? '' : `, adapter fused into the weights' products: ${fuseSetting}`;
      const census = plan.census ? censusTotals(plan.census) : undefined;
      const censusNotes = census
        ? [
            `planned work${plan.censusKernels === 'cuda' ? " (ggml-cuda's kernels, conversions included)" : ''}: ${census.count.toLocaleString('en-US')} ops, ${bytesText(census.bytes)} read and written, ${flopsText(census.flops)} in products; most bytes by op kind:`,
            ...censusLines(groupCensus(plan.census!, (o) => o.op), census.bytes),
            'most bytes by role:',
            ...censusLines(groupCensus(plan.census!, (o) => o.role), census.bytes),
          ]
        : [];
      const keptLayers = args['train-recompute'] ? plan.keptLayers : model.info.nLayer;
      // What the plan settled, in both reports' data.
      const planned = {
        recompute: args['train-recompute'],
        keptLayers,
        plannedComputeBytes: plan.deviceBytes,
        // The plan's work at the device's rates (MemoryPlan.estimatedMs), to hold against the
        // measured ms a step: what keptSplit's choice rests on.
        estimatedMs: plan.estimatedMs,
        ...(args['train-memory-gib'] !== undefined && { memoryBudgetGiB: args['train-memory-gib'], plannedTotalBytes: plan.deviceBytes + fixedBytes }),
        chunkRows: args['train-chunk-rows'],
        transposedWeightsBytes: tr.info.transposedWeightsBytes,
        mergeAdapter: merged,
        fuseAdapter: fuseSetting,
        keptF16: args['train-kept-f16'],
        keptNorms: args['train-kept-norms'],
        flashAttn: tr.info.flashAttn,
        fusedAttnBackward: tr.info.fusedAttnBackward,
        fusedMlpBackward: tr.info.fusedMlpBackward,
        fusedMerge: tr.info.fusedMerge,
        fusedLoraBackward: tr.info.fusedLoraBackward,
        fusedLora16: tr.info.fusedLora16,
        mergeBf16: tr.info.mergeBf16,
        fusedAttnF16: tr.info.fusedAttnF16,
        fusedHead: tr.info.fusedHead,
        fusedNormBackward: tr.info.fusedNormBackward,
        gateUp16: tr.info.gateUp16,
        swigluGrad16: tr.info.swigluGrad16,
        nodeWaits: tr.info.nodeWaits,
        ...workspace,
        ...(census && { census: { ...census, kernels: plan.censusKernels, ops: plan.census } }),
      };
      if (args['train-steps'] === 0) {
        // Planned only: the shape's memory and (with --train-census) its work, on any machine.
        return {
          title,
          headers: ['workload', 'tok/s', 'planned compute buffer'],
          rows: [[`${B} x ${L} tokens`, 'not run (--train-steps 0)', `${mib(plan.deviceBytes)} MiB`]],
          notes: [
            `planned only: ${plan.microBatches} micro-batch${plan.microBatches === 1 ? '' : 'es'}${plan.microBatchTokens ? ` of at most ${plan.microBatchTokens} tokens` : ''}, ${
              args['train-recompute'] ? `${keptLayers} of ${model.info.nLayer} layers kept` : 'no recomputation'
            }${keptLayers && args['train-kept-f16'] ? ' (gate and up kept in f16)' : ''}${keptLayers && args['train-kept-norms'] ? ' (with their norms)' : ''}${merged ? `, adapter merged into the weights in the graph${mergeNode}` : ''}${fusedNote}${flash}`,
            ...censusNotes,
          ],
          data: { batch: B, len: L, steps: 0, microBatches: plan.microBatches, ...planned },
        };
      }
      const opts = { lr: 1e-4, ...base, keptLayers, microBatchTokens: plan.microBatchTokens };
      const first = await tr.step(batch, opts);
      // Every step's loss: variants that only move waits or buffers (--train-node-waits) must
      // give the same numbers to the bit, which summarize.mjs checks across a GPU check's runs.
      const losses = [first.loss];
      const t0 = performance.now();
      let graphMs = 0;
      for (let s = 0; s < args['train-steps']; s++) {
        const st = await tr.step(batch, opts);
        graphMs += st.graphMs;
        losses.push(st.loss);
      }
      const sec = (performance.now() - t0) / 1000;
      graphMs /= args['train-steps'];
      const profile = args['train-profile'] ? await tr.step(batch, { ...opts, profile: true }) : undefined;
      const profiled = profile?.profile ?? [];
      const profiledMs = profiled.reduce((a, o) => a + o.ms, 0);
      const tokPerSec = (B * L * args['train-steps']) / sec;
      const gpuUsed = free0 - gpuMemoryFree();
      // PEFT's peak (torch.cuda.max_memory_allocated) counts the model's weights; the drop in free
      // memory does not, as the model was loaded before it was first read.
      const gpuTotal = gpuUsed + model.info.weightBytes;
      const memory = model.info.gpu
        ? `${mib(gpuTotal)} MiB GPU (model ${mib(model.info.weightBytes)} + ${mib(gpuUsed)} free-memory drop)`
        : `${mib(process.memoryUsage().rss - rss0)} MiB host (RSS growth, model not counted)`;
      return {
        title,
        headers: ['workload', 'tok/s', 'ms/step', 'memory'],
        rows: [[`${B} x ${L} tokens`, formatRate(tokPerSec), ((1000 * sec) / args['train-steps']).toFixed(0), memory]],
        notes: [
          `${tr.info.nParams.toLocaleString('en-US')} trainable parameters, activation recomputation ${
            args['train-recompute'] ? `on${keptLayers ? ` (top ${keptLayers} layer${keptLayers === 1 ? '' : 's'} keep their costly activations)` : ''}` : 'off'
          }${keptLayers && args['train-kept-f16'] ? ', gate and up kept in f16 (--train-kept-f16)' : ''}${keptLayers && args['train-kept-norms'] ? ', norms kept (--train-kept-norms)' : ''}${plan.microBatches > 1 ? `, ${plan.microBatches} micro-batches of at most ${plan.microBatchTokens} tokens` : ''}, compute buffer ${mib(first.computeBytes)} MiB (planned ${mib(plan.deviceBytes)}${
            args['train-memory-gib'] !== undefined ? `; ${mib(plan.deviceBytes + fixedBytes)} MiB in all planned against --train-memory-gib ${args['train-memory-gib']}` : ''
          }),${merged ? ` adapter merged into the weights in the graph (--train-merge-adapter)${mergeNode},` : ` adapter fused into the weights' products: ${fuseSetting} (--train-fuse-adapter),`} flash attention ${tr.info.flashAttn ? 'on' : 'off'}, attention backward ${tr.info.fusedAttnBackward ? 'fused (--train-fused-attn-backward)' : "in ggml's ops"}, SwiGLU backward ${tr.info.fusedMlpBackward ? 'fused (--train-fused-mlp-backward)' : "in ggml's ops"}, LM head and loss ${tr.info.fusedHead ? 'by our node (--train-fused-head)' : "in ggml's ops"}, norms' backward ${tr.info.fusedNormBackward ? 'by our nodes (--train-fused-norm-backward)' : "in ggml's ops"}, gate and up ${tr.info.gateUp16 ? `in 16 bits by our node where merged into 16-bit weights (--train-gate-up-16${tr.info.swigluGrad16 ? ", the SwiGLU's gradient too: --train-swiglu-grad-16" : ''})` : "in f32 by ggml's products"}, frozen weights ${
            tr.info.transposedWeightsBytes ? `kept transposed (${mib(tr.info.transposedWeightsBytes)} MiB, in the memory figure)` : 'transposed in each step'
          }; best compared with PEFT on the same machine (scripts/device/peft_bench.py prints one JSON line)`,
          `host time building, placing and planning the step's graphs: ${graphMs.toFixed(1)} ms a step (StepResult.graphMs; a GPU waits through it)`,
          ...(first.fallbackOps.length ? [`ops the device could not run, done on the CPU: ${first.fallbackOps.join(', ')}`] : []),
          ...censusNotes,
          ...(profile
            ? [
                `profiled step: ${profile.ms.toFixed(0)} ms, ${profiledMs.toFixed(0)} ms in ops, each run and waited on alone; slowest op kinds:`,
                ...profileLines(groupOps(profiled, (o) => o.op), profiledMs),
                'slowest roles (phase.part: fwd forward, re recomputed, bwd backward; see OpTime.role):',
                ...profileLines(groupOps(profiled, (o) => o.role), profiledMs),
                ...(plan.census
                  ? ['the same roles against the planned work (bytes and FLOPs over profiled time; far below the memory bandwidth: launch-bound or a slow kernel):', ...rateLines(profiled, plan.census)]
                  : []),
              ]
            : []),
        ],
        data: {
          batch: B,
          len: L,
          steps: args['train-steps'],
          tokPerSec,
          losses,
          msPerStep: (1000 * sec) / args['train-steps'],
          graphMsPerStep: graphMs,
          gpuBytes: model.info.gpu ? gpuUsed : null,
          gpuTotalBytes: model.info.gpu ? gpuTotal : null,
          modelWeightBytes: model.info.weightBytes,
          graphSplits: first.graphSplits,
          graphHostInputs: first.graphHostInputs,
          graphCustomRuns: first.graphCustomRuns,
          fallbackOps: first.fallbackOps,
          microBatches: first.microBatches,
          computeBytes: first.computeBytes,
          cublasCompute: args['train-cublas'],
          ...planned,
          ...(profile && { profile: { stepMs: profile.ms, ops: profiled } }),
        },
      };
    } catch (e) {
      throw budgetInFlags(e, '--train-len', '--train-micro-batch-tokens');
    } finally {
      tr.dispose();
      restoreCublas();
    }
  },
};

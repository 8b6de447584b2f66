// `rrr-native bench`: our engine against libllama on the same workload in the same process.
// The report is a list of sections, each a function from the loaded model to a table:
// generation (here), RRR's retry pass (bench-retries.ts) and the LoRA training step
// (bench-training.ts), run in that order.
import type { CommandModule } from 'yargs';
import { Generator } from '../../engine/generator.js';
import { Model } from '../../engine/model.js';
import { ReferenceDecoder } from '../../engine/reference-decoder.js';
import { RrrError } from '../../engine/errors.js';
import { trainingSection } from './bench-training.js';
import { retriesSection, type RetryBenchArgs } from './bench-retries.js';
import { repeatedText } from './bench-text.js';
import type { DeviceName } from '../../engine/types.js';
import { emitJson, say, table } from '../output.js';
import { Progress, formatRate } from '../progress.js';
import { flashAttnOption, refuseAllNodesOffGpu, type FlashAttnFlag, type FuseAdapterFlag } from '../step-flags.js';
import { integerFlag, keptLayersFlag, MAX_SEQS, MAX_THREADS, maxFlag, memoryGibFlag, nonNegativeFlag } from '../flag-checks.js';

export interface BenchArgs extends RetryBenchArgs {
  model: string;
  prompt: number;
  gen: number;
  parallel: number[];
  device: DeviceName;
  threads: number;
  'flash-attn': FlashAttnFlag;
  'device-sampling': 'auto' | 'on' | 'off';
  'kv-type': 'f16' | 'f32';
  'kv-layout': 'unified' | 'streams';
  reference: boolean;
  /** Defaults to --kv-layout. */
  'reference-kv'?: 'unified' | 'streams';
  repeat: number;
  generation: boolean;
  train: boolean;
  'train-batch': number;
  'train-len': number;
  'train-steps': number;
  'train-recompute': boolean;
  'train-chunk-rows': number;
  'train-transposed': 'auto' | 'cache' | 'per-step';
  'train-cublas': 'auto' | 'f32' | 'f16' | 'bf16';
  'train-profile': boolean;
  'train-census': boolean;
  'train-census-kernels': 'auto' | 'graph' | 'cuda';
  'train-merge-adapter'?: boolean;
  'train-kept-f16': boolean;
  'train-kept-norms': boolean;
  'train-fused-attn-backward': boolean;
  'train-fused-mlp-backward': boolean;
  'train-fused-merge': boolean;
  'train-fused-lora-backward': boolean;
  'train-fused-lora-16': boolean;
  'train-fused-head': boolean;
  'train-fused-head-steps'?: boolean;
  'train-fused-norm-backward': boolean;
  'train-gate-up-16': boolean;
  'train-swiglu-grad-16': boolean;
  'train-node-waits'?: 'host' | 'device';
  'train-all-nodes': boolean;
  'train-merge-bf16': boolean;
  'train-fused-attn-f16': boolean;
  'train-attn-workspace-mib'?: number;
  'train-fuse-adapter': FuseAdapterFlag;
  'train-kept-layers': number;
  'train-memory-gib'?: number;
  'train-micro-batch-tokens': number;
  'train-kept-split': boolean;
  json: boolean;
}

export interface BenchContext {
  model: Model;
  args: BenchArgs;
}

export interface BenchReport {
  title: string;
  headers: string[];
  rows: (string | number)[][];
  notes: string[];
  /** Machine-readable form for --json. */
  data: unknown;
}

export interface BenchSection {
  key: string;
  run(ctx: BenchContext): Promise<BenchReport>;
}


/** A fixed, ordinary-text prompt of exactly n tokens. */
function benchPrompt(model: Model, n: number): Int32Array {
  return repeatedText(model, 'The quick brown fox jumps over the lazy dog while the committee reviews every proposal twice. ', n);
}

const rate = (tokens: number, ms: number) => (ms > 0 ? (1000 * tokens) / ms : 0);
const mib = (b: number) => (b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 2 : 1);
const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : '-');
const layoutName = (l: 'unified' | 'streams') => (l === 'unified' ? 'one shared cell pool' : 'one stream per sequence, prompt copied');

export const generationSection: BenchSection = {
  key: 'generation',
  async run({ model, args }) {
    const P = args.prompt;
    const G = args.gen;
    if (!args.generation) return { title: 'Generation', headers: ['workload', 'tok/s'], rows: [['skipped (--no-generation)', '-']], notes: [], data: null };
    const prompt = benchPrompt(model, P);
    const deviceSampling = args['device-sampling'] === 'auto' ? undefined : args['device-sampling'] === 'on';
    const kvLayout = args['kv-layout'];
    const referenceKv = args['reference-kv'] ?? kvLayout;
    let sampledInGraph = false;
    // Warm-up: first touches of weights and thread pools are not part of either engine's speed.
    // Our engine settles 'auto' flash attention (on a GPU with a kernel for these heads), and
    // llama.cpp gets the same setting.
    const warm = await Generator.create(model, {
      maxSeqs: 1,
      nCtx: 24,
      kvType: args['kv-type'],
      flashAttn: flashAttnOption(args['flash-attn']),
      deviceSampling,
    });
    const flashAttn = warm.info.flashAttn;
    try {
      await warm.generate([{ prompt: prompt.slice(0, 16) }], { maxTokens: 4, temperature: 0, ignoreEos: true });
    } finally {
      warm.dispose();
    }
    const ref = args.reference
      ? await ReferenceDecoder.load(model.info.path, {
          gpu: model.info.gpu,
          threads: args.threads,
          f32Kv: args['kv-type'] === 'f32',
          flashAttn,
          kvUnified: referenceKv === 'unified',
        })
      : undefined;
    const runs = args.parallel.length * (ref ? 2 : 1) * args.repeat;
    const progress = new Progress('bench', runs, { unit: 'run' });
    const data: Record<string, unknown>[] = [];
    const rows: (string | number)[][] = [];
    const fallbackOps = new Set<string>();
    try {
      await ref?.greedy([{ prompt: prompt.slice(0, 16) }], { maxTokens: 4, ignoreEos: true });
      let done = 0;
      for (const N of args.parallel) {
        // Unified: the prompt once plus every completion (shared-prefix sizing, as libllama's
        // unified cache gets). Streams: P + G cells for each sequence.
        const gen = await Generator.create(model, {
          maxSeqs: N,
          nCtx: P + G,
          ...(kvLayout === 'unified' && { nCells: P + N * G }),
          kvLayout,
          kvType: args['kv-type'],
          flashAttn,
          deviceSampling,
        });
        sampledInGraph = gen.info.deviceSampling;
        type Speed = { prefill: number; decode: number; kvBytes: number; nCells: number };
        // Best of --repeat runs per engine, alternating engines, so a busy machine penalises both alike.
        const best = (a: Speed | undefined, b: Speed): Speed =>
          a ? { ...b, prefill: Math.max(a.prefill, b.prefill), decode: Math.max(a.decode, b.decode) } : b;
        let o: Speed | undefined;
        let l: Speed | undefined;
        let oursTokens: Int32Array[] = [];
        let refTokens: Int32Array[] = [];
        try {
          for (let rep = 0; rep < args.repeat; rep++) {
            progress.update(done++, `ours, ${N} seq`);
            const out = await gen.generate([{ prompt, n: N }], { maxTokens: G, temperature: 0, ignoreEos: true });
            const st = gen.lastStats!;
            st.fallbackOps.forEach((op) => fallbackOps.add(op));
            o = best(o, { prefill: rate(st.prefillTokens, st.prefillMs), decode: rate(st.decodeTokens, st.decodeMs), kvBytes: gen.info.kvBytes, nCells: gen.info.nCells });
            oursTokens = out[0]!.map((c) => c.tokens);
            if (ref) {
              progress.update(done++, `llama.cpp, ${N} seq`);
              const r = await ref.greedy([{ prompt, n: N }], { maxTokens: G, ignoreEos: true });
              l = best(l, { prefill: rate(r.stats.prefillTokens, r.stats.prefillMs), decode: rate(r.stats.decodeTokens, r.stats.decodeMs), kvBytes: r.kvBytes, nCells: r.nCells });
              refTokens = r.tokens[0]!;
            }
          }
        } finally {
          gen.dispose();
        }
        o = o!;
        const same = l ? oursTokens.filter((t, j) => t.length === refTokens[j]!.length && t.every((x, k) => x === refTokens[j]![k])).length : undefined;
        const placed = { graphSplits: gen.lastStats!.graphSplits, fallbackOps: gen.lastStats!.fallbackOps };
        data.push({ parallel: N, ours: { ...o, ...placed }, ...(l && { llamaCpp: l, sameGreedyTokens: same }) });
        rows.push([
          N,
          formatRate(o.prefill), l ? formatRate(l.prefill) : '-', l ? ratio(o.prefill, l.prefill) : '-',
          formatRate(o.decode), l ? formatRate(l.decode) : '-', l ? ratio(o.decode, l.decode) : '-',
          mib(o.kvBytes), l ? mib(l.kvBytes) : '-',
          same === undefined ? '-' : `${same}/${N}`,
        ]);
      }
      progress.finish();
    } finally {
      ref?.dispose();
    }
    return {
      title: `Generation: ${P}-token prompt shared by N sequences, ${G} new tokens each (greedy, EOS ignored)`,
      headers: ['N', 'prefill tok/s', 'llama.cpp', 'ratio', 'decode tok/s', 'llama.cpp', 'ratio', 'KV MiB', 'llama.cpp', 'same tokens'],
      rows,
      notes: [
        `KV cache ${args['kv-type']}, ours ${layoutName(kvLayout)}, llama.cpp ${layoutName(referenceKv)}; flash attention ${flashAttn ? 'on' : 'off'}, sampling ${sampledInGraph ? 'in the graph' : 'on the host'}, device ${model.info.device}, ${model.info.threads} threads, best of ${args.repeat} run(s)`,
        'prefill counts the shared prompt once; decode tok/s = tokens generated per second over all sequences',
        ...(fallbackOps.size ? [`ours: ops the device could not run, done on the CPU: ${[...fallbackOps].join(', ')}`] : []),
      ],
      data: { prompt: P, gen: G, repeat: args.repeat, kvType: args['kv-type'], kvLayout, referenceKv, flashAttn, deviceSampling: sampledInGraph, device: model.info.device, threads: model.info.threads, results: data },
    };
  },
};

const sections: readonly BenchSection[] = [generationSection, retriesSection, trainingSection];

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: "Measure prefill and decode speed at 1, 16, 64 sequences against llama.cpp on the same model (KV cache memory too), RRR's retry pass, and LoRA training step speed",
  builder: (y) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'GGUF model file' })
      .option('prompt', { type: 'number', default: 256, describe: 'prompt tokens (shared by the N sequences)' })
      .option('gen', { type: 'number', default: 256, describe: 'new tokens per sequence' })
      .option('parallel', { type: 'number', array: true, default: [1, 16, 64], describe: 'numbers of parallel sequences' })
      .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: 'auto' as const, describe: 'compute device' })
      .option('threads', { type: 'number', default: 0, describe: 'CPU threads for both engines (0: all cores)' })
      .option('flash-attn', { choices: ['auto', 'on', 'off'] as const, default: 'auto' as const, describe: "flash attention for both engines' generation and for our training steps (auto: on for a GPU with a kernel for the model's head size)" })
      .option('device-sampling', {
        choices: ['auto', 'on', 'off'] as const,
        default: 'auto' as const,
        describe: 'our engine picks tokens inside the decode graph and copies back only ids (auto: on for GPU)',
      })
      .option('kv-type', { choices: ['f16', 'f32'] as const, default: 'f16' as const, describe: 'KV cache type for both engines' })
      .option('kv-layout', {
        choices: ['streams', 'unified'] as const,
        default: 'streams' as const,
        describe: "our KV layout: streams gives every sequence its own cells (prompt copied) and each token reads only its own; unified shares each prompt's cells and reads one masked window over all sequences",
      })
      .option('reference', { type: 'boolean', default: true, describe: 'also run llama.cpp (--no-reference skips it)' })
      .option('reference-kv', {
        choices: ['unified', 'streams'] as const,
        describe: "llama.cpp's KV layout (default: the same as --kv-layout; streams is llama-batched-bench's default)",
      })
      .option('repeat', { type: 'number', default: 1, describe: 'runs per engine and batch size; the best is reported' })
      .option('generation', { type: 'boolean', default: true, describe: 'time generation against llama.cpp (--no-generation skips it)' })
      .option('retries', { type: 'boolean', default: true, describe: "also time RRR's retry pass: prompts sharing their task's start, shared or whole, against llama.cpp (--no-retries skips it; --no-generation skips it too)" })
      .option('retry-tasks', { type: 'number', default: 8, describe: 'retry pass: failed tasks (each with its own start)' })
      .option('retry-group', { type: 'number', default: 8, describe: 'retry pass: retries per task (the GRPO group size)' })
      .option('retry-start', { type: 'number', default: 256, describe: "retry pass: tokens of a task's start (first prompt, first answer, reflection request), shared by its retries" })
      .option('retry-rest', { type: 'number', default: 64, describe: "retry pass: tokens of each retry's own rest (its reflection and the retry instruction)" })
      .option('retry-gen', { type: 'number', default: 32, describe: 'retry pass: new tokens per retry' })
      .option('train', { type: 'boolean', default: true, describe: 'also time LoRA training steps (--no-train skips them)' })
      .option('train-batch', { type: 'number', default: 16, describe: 'sequences per training step' })
      .option('train-len', { type: 'number', default: 512, describe: 'tokens per training sequence' })
      .option('train-steps', {
        type: 'number',
        default: 2,
        describe: 'timed training steps (after one warm-up step); 0 plans the step and runs none: its compute buffer and, with --train-census, its work, on any machine',
      })
      .option('train-recompute', {
        type: 'boolean',
        default: true,
        describe: "recompute each layer's activations in the backward pass (--no-train-recompute keeps them: faster, far more memory)",
      })
      .option('train-chunk-rows', { type: 'number', default: 0, describe: 'loss rows per LM-head chunk in training (0: about 32M logits per chunk on the CPU, 160M on a GPU)' })
      .option('train-transposed', {
        choices: ['auto', 'cache', 'per-step'] as const,
        default: 'auto' as const,
        describe: 'keep the frozen weights transposed for the backward pass (cache: one more copy in memory; per-step: transposed in every step; auto: per-step on a GPU, cache on the CPU where it takes at most 25% of RAM)',
      })
      .option('train-kept-layers', {
        type: 'number',
        default: 0,
        describe: "with recomputation: the top N layers keep their costly activations (faster; Trainer.plan's bytes are printed)",
      })
      .option('train-memory-gib', {
        type: 'number',
        describe:
          'pick --train-kept-layers as the most that fit this many GiB of GPU memory in all: model weights, kept transposed weights, adapter and AdamW state, 512 MiB for cuBLAS on a GPU, and the planned compute buffer',
      })
      .option('train-micro-batch-tokens', {
        type: 'number',
        default: 0,
        describe:
          'tokens per micro-batch (whole sequences; gradients accumulated over them; 0: the whole batch at once). With --train-memory-gib the step may split further to fit, and kept layers fill what a smaller micro-batch leaves free (StepOptions.microBatchTokens)',
      })
      .option('train-kept-split', {
        type: 'boolean',
        default: true,
        describe:
          'with --train-memory-gib, where not every layer fits: also weigh more micro-batches, whose smaller activations let more layers skip recomputation, and take the split whose planned work is least (--no-train-kept-split: the fewest micro-batches that fit; StepOptions.keptSplit)',
      })
      .option('train-cublas', {
        choices: ['auto', 'f32', 'f16', 'bf16'] as const,
        default: 'auto' as const,
        describe:
          "CUDA only: cuBLAS compute type of the training rows' large products (ggml-cuda's GGML_CUDA_CUBLAS_COMPUTE_TYPE). auto: ggml's choice, for f16 weights f16 products whose f16 output is converted to f32; bf16 converts the weights instead and writes f32 directly",
      })
      .option('train-profile', {
        type: 'boolean',
        default: false,
        describe: 'after the timed steps, run one more step with every op timed and print where its time went (that step is slower)',
      })
      .option('train-census', {
        type: 'boolean',
        default: false,
        describe: "print the planned step's work by op kind and role: bytes each op reads and writes, and GEMM FLOPs (from the shapes, nothing timed: Trainer.plan's census)",
      })
      .option('train-census-kernels', {
        choices: ['auto', 'graph', 'cuda'] as const,
        default: 'auto' as const,
        describe:
          "whose kernels --train-census counts bytes for: graph = the ops as written; cuda = as ggml-cuda runs them, with the conversions it makes inside products and flash attention (f32 inputs to f16, f16 results to f32, MMQ's q8_1) as entries of their own, so a GPU's step can be counted on the CPU; auto = the device's",
      })
      .option('train-merge-adapter', {
        type: 'boolean',
        describe:
          'multiply by W + s·B·A merged in the graph instead of adding the adapter path B·(s·A·x); --no-train-merge-adapter never does; default: on a GPU with f16 weights and no --train-fuse-adapter, else off (StepOptions.mergeAdapter)',
      })
      .option('train-kept-norms', {
        type: 'boolean',
        default: false,
        describe:
          "layers that keep their activations also keep their two norms' outputs (f32), which the adapters' gradients read, instead of rebuilding them in the backward pass (StepOptions.keptNorms)",
      })
      .option('train-kept-f16', {
        type: 'boolean',
        describe:
          "layers that keep their activations (--train-kept-layers, --train-memory-gib, --no-train-recompute) hold the MLP's gate and up products in f16 instead of f32, 61% of the bytes, at the cost of casts (StepOptions.keptF16)",
        default: false,
      })
      .option('train-fused-attn-backward', {
        type: 'boolean',
        default: false,
        describe:
          "take attention back in one node of our own instead of ggml's ops: no probabilities kept or rebuilt for it, no permuting copies; on a GPU cuBLAS's batched products in TF32 unless the weights are f32 (TrainerOptions.fusedAttnBackward)",
      })
      .option('train-fused-mlp-backward', {
        type: 'boolean',
        default: false,
        describe:
          "take the SwiGLU back in one node of our own instead of three of ggml's ops: one pass over the MLP's gate, up and their gradient, 20 bytes a number instead of 36, with 16-bit copies for 16-bit dx products; in merged steps over 16-bit weights with --train-fused-merge the forward's SwiGLU too, written in the down product's type; on a GPU kernels of ours (TrainerOptions.fusedMlpBackward)",
      })
      .option('train-fused-merge', {
        type: 'boolean',
        default: false,
        describe:
          "where the step merges the adapter into the weights (--train-merge-adapter, a GPU's default with f16 weights): each W + s·B·A by one node of our own instead of three of ggml's ops, 4 bytes a weight instead of 12, and a recomputed layer's transposes for its backward pass in the same node (TrainerOptions.fusedMerge)",
      })
      .option('train-fused-lora-backward', {
        type: 'boolean',
        default: false,
        describe:
          "where the step merges the adapter into the weights: each group of adapters that read one input takes its gradients in two nodes of our own (cuBLAS products on a GPU, in the runs of our other nodes) instead of about a dozen of ggml's ops an adapter (TrainerOptions.fusedLoraBackward)",
      })
      .option('train-fused-lora-16', {
        type: 'boolean',
        default: false,
        describe:
          "with --train-fused-lora-backward and --train-fused-mlp-backward over 16-bit merged weights: the MLP's adapter gradients (gate, up, down) multiply 16-bit numbers with f32 sums, and the SwiGLU node writes 16 bits alone (TrainerOptions.fusedLora16)",
      })
      .option('train-fused-head', {
        type: 'boolean',
        default: false,
        describe:
          "the LM head and the loss's gradient at it as one node of our own (per chunk of --train-chunk-rows rows: two products and one pass per row, cuBLAS and our kernel on a GPU) instead of a dozen of ggml's ops a chunk (TrainerOptions.fusedHead)",
      })
      .option('train-fused-head-steps', {
        type: 'boolean',
        describe:
          "with --train-fused-head: its node takes the GPU's steps (a chunk's logits in a work space) — a GPU's default; on the CPU, whose own loops take whole rows by default, slow loops that plan and check the GPU's way (TrainerOptions.fusedHeadSteps)",
      })
      .option('train-fused-norm-backward', {
        type: 'boolean',
        default: false,
        describe:
          "each layer's two RMS norms' backward passes as nodes of our own, which also sum the projections' dx terms and add the residual's gradient (TrainerOptions.fusedNormBackward)",
      })
      .option('train-gate-up-16', {
        type: 'boolean',
        default: false,
        describe:
          "with --train-merge-adapter, --train-fused-mlp-backward and --train-fused-lora-backward: the MLP's gate and up products written in 16 bits (their merged weights' type) by our node, read so by the SwiGLU's nodes and kept so (TrainerOptions.gateUp16)",
      })
      .option('train-swiglu-grad-16', {
        type: 'boolean',
        default: false,
        describe:
          "with --train-gate-up-16: the gradient at the SwiGLU (down's dx product) written in 16 bits by our node too, and read so by the SwiGLU's backward node (TrainerOptions.swigluGrad16)",
      })
      .option('train-all-nodes', {
        type: 'boolean',
        default: false,
        describe:
          "every node of ours and --train-node-waits device, whatever those flags say (train --all-nodes: a GPU's fastest measured step); refused off a GPU",
      })
      .option('train-node-waits', {
        choices: ['host', 'device'] as const,
        describe:
          "on a GPU with any of our nodes: where each run of them and ggml-cuda's ops around it wait for each other: host = the scheduler's pieces, waited for on the host at both ends; device = our backend fronts ggml-cuda, the two CUDA streams wait by events (TrainerOptions.nodeWaits; default host)",
      })
      .option('train-merge-bf16', {
        type: 'boolean',
        default: false,
        describe:
          "where the step merges the adapter into the weights: merge f16 and quantized weights into bf16, whose ggml-cuda products write f32 directly instead of f16 results converted after (8 bits of mantissa instead of 11; GeForce cards sum them at half their f16 rate) (TrainerOptions.mergeBf16)",
      })
      .option('train-fused-attn-f16', {
        type: 'boolean',
        default: false,
        describe:
          'with --train-fused-attn-backward: its products on f16 copies of Q, K, V, dO, the probabilities and their gradient (f32 sums), 28 bytes per [L, L] number instead of 40 (TrainerOptions.fusedAttnF16)',
      })
      .option('train-attn-workspace-mib', {
        type: 'number',
        describe:
          'with --train-fused-attn-backward: its work space in MiB, which sets how many sequences its GPU kernels take at a time (default 256 on a GPU; on the CPU a size runs the GPU steps in slow loops) (TrainerOptions.attnWorkspaceMiB)',
      })
      .option('train-fuse-adapter', {
        choices: ['auto', 'bytes', 'on', 'off'] as const,
        default: 'auto' as const,
        describe:
          "without merging, sum each adapter's B·(s·A·x) inside its weight's product [W | B]·[x ; s·A·x] instead of adding it (StepOptions.fuseAdapter): bytes = where that moves fewer bytes, on = every projection the weights' type allows, off = never, auto = bytes on a GPU, off on the CPU. It also joins the backward dx products of q/k/v and gate/up into one, merged or not: with --train-merge-adapter that is all it does (a GPU's default step is merged with bytes)",
      })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
  handler: async (a) => {
    const mode = { json: a.json };
    for (const [flag, v] of [['prompt', a.prompt], ['gen', a.gen], ['repeat', a.repeat], ['train-batch', a['train-batch']], ['train-len', a['train-len']], ['retry-tasks', a['retry-tasks']], ['retry-group', a['retry-group']], ['retry-start', a['retry-start']], ['retry-rest', a['retry-rest']], ['retry-gen', a['retry-gen']], ...a.parallel.map((p) => ['parallel', p] as const)] as const) {
      integerFlag(`--${flag}`, v, 1);
    }
    if (a['train-memory-gib'] !== undefined) memoryGibFlag('--train-memory-gib', a['train-memory-gib']);
    // Checked before the generation sections, which can take minutes, run.
    for (const p of a.parallel) maxFlag('--parallel', p, MAX_SEQS);
    maxFlag('--retry-tasks x --retry-group', a['retry-tasks'] * a['retry-group'], MAX_SEQS);
    maxFlag('--threads', a.threads ?? 0, MAX_THREADS);
    // The batch's tokens and weights are built in JS before the trainer sees them.
    maxFlag('--train-batch x --train-len', a['train-batch'] * a['train-len'], 2 ** 24);
    if (a['train-attn-workspace-mib'] !== undefined) nonNegativeFlag('--train-attn-workspace-mib', a['train-attn-workspace-mib']);
    for (const [flag, v] of [['threads', a.threads], ['train-steps', a['train-steps']], ['train-chunk-rows', a['train-chunk-rows']], ['train-kept-layers', a['train-kept-layers']], ['train-micro-batch-tokens', a['train-micro-batch-tokens']]] as const) {
      integerFlag(`--${flag}`, v, 0);
    }
    const model = await Model.load(a.model, { device: a.device, threads: a.threads });
    const reports: Record<string, unknown> = {};
    try {
      // Before any section runs, so a refusal is the only line.
      if (a['train-all-nodes']) refuseAllNodesOffGpu('--train-all-nodes', model.info);
      keptLayersFlag('--train-kept-layers', a['train-kept-layers'], model.info.nLayer);
      if (a.prompt + a.gen > model.info.nCtxTrain) {
        throw new RrrError(`--prompt ${a.prompt} + --gen ${a.gen} exceeds the model's context of ${model.info.nCtxTrain} tokens`);
      }
      const retryLen = a['retry-start'] + a['retry-rest'] + a['retry-gen'];
      if (a.generation && a.retries && retryLen > model.info.nCtxTrain) {
        throw new RrrError(`--retry-start ${a['retry-start']} + --retry-rest ${a['retry-rest']} + --retry-gen ${a['retry-gen']} exceeds the model's context of ${model.info.nCtxTrain} tokens`);
      }
      say(mode, `model: ${a.model} (${model.info.arch}, ${model.info.nLayer} layers, ${model.info.weightType}, ${mib(model.info.weightBytes)} MiB)`);
      for (const s of sections) {
        const r = await s.run({ model, args: a });
        reports[s.key] = { title: r.title, data: r.data ?? r.rows };
        say(mode, `\n${r.title}`);
        say(mode, table(r.headers, r.rows));
        for (const n of r.notes) say(mode, `  ${n}`);
      }
    } finally {
      model.dispose();
    }
    emitJson(mode, { model: a.model, ...reports });
  },
};

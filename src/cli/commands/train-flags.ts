// train's flags: what yargs reads, and the ones that say how steps run (not part of run.json).
import type { Argv } from 'yargs';
import { RrrError } from '../../engine/errors.js';
import type { DeviceName, StepOptions, TrainerOptions } from '../../engine/types.js';
import { DEFAULT_CTX } from '../default-model.js';
import { budgetBytes, memoryGibFlag } from '../flag-checks.js';
import { flashAttnOption, fuseAdapterOption, type FlashAttnFlag, type FuseAdapterFlag } from '../step-flags.js';
import { TASK_NAMES } from '../task-data.js';
import { ALL_TARGETS } from '../run-config.js';

export interface TrainArgs {
  model?: string;
  task?: string;
  data?: string;
  generate?: number;
  limit?: number;
  out?: string;
  resume: boolean;
  steps?: number;
  'tasks-per-step'?: number;
  'group-size'?: number;
  temperature?: number;
  'retry-temperature'?: number;
  lr?: number;
  'lr-schedule'?: string;
  'warmup-steps'?: number;
  beta?: number;
  'clip-epsilon'?: number;
  'max-grad-norm'?: number;
  'weight-decay'?: number;
  'min-lr-ratio'?: number;
  'advantage-std'?: string;
  'advantage-eps'?: number;
  'passes-per-batch'?: number;
  rank?: number;
  alpha?: number;
  targets?: string;
  'max-reflection-tokens'?: number;
  'max-answer-tokens'?: number;
  'checkpoint-every'?: number;
  seed?: number;
  device: DeviceName;
  threads?: number;
  ctx?: number;
  'skip-bad-lines': boolean;
  'reuse-first-attempts': boolean;
  json: boolean;
  'train-memory-gib'?: number;
  'kept-layers': string;
  'merge-adapter'?: boolean;
  'kept-f16': boolean;
  'kept-norms': boolean;
  'kept-split': boolean;
  'flash-attn': FlashAttnFlag;
  'fused-attn-backward': boolean;
  'fused-mlp-backward': boolean;
  'fused-merge': boolean;
  'fused-lora-backward': boolean;
  'fused-lora-16': boolean;
  'fused-head': boolean;
  'fused-norm-backward': boolean;
  'gate-up-16': boolean;
  'swiglu-grad-16': boolean;
  'merge-bf16': boolean;
  'node-waits'?: 'host' | 'device';
  'all-nodes': boolean;
  'fused-attn-f16': boolean;
  'fuse-adapter': FuseAdapterFlag;
  'lora-dropout'?: number;
}


const TIMED_TOGETHER = "an H200 timed it only with the other switches together (README: 1.20x PEFT's tok/s in 16 GiB with --node-waits device), and the GPU run of its tests is not yet clean";

/** The trainer's switches for our own nodes and bf16 merges, as the flags give them. */
export type NodeSwitches = Pick<
  TrainerOptions,
  'fusedAttnBackward' | 'fusedAttnF16' | 'fusedMlpBackward' | 'fusedMerge' | 'fusedLoraBackward' | 'fusedLora16' | 'mergeBf16' | 'fusedHead' | 'fusedNormBackward' | 'gateUp16' | 'swigluGrad16' | 'nodeWaits'
>;

/**
 * --train-memory-gib, --kept-layers, --kept-f16, --kept-norms, --kept-split, --merge-adapter, --fuse-adapter,
 * --flash-attn and the node switches (--fused-*, --merge-bf16): how steps run, not what they
 * train, so they are not part of run.json and a resumed run may change them.
 */
export function executionSettings(a: TrainArgs): {
  budget?: number;
  kept: number | 'auto';
  kept16: boolean;
  keptNorms: boolean;
  keptSplit: boolean;
  merge?: boolean;
  fuse: StepOptions['fuseAdapter'];
  flashAttn?: boolean;
  nodes: NodeSwitches;
} {
  const gib = a['train-memory-gib'];
  if (gib !== undefined) memoryGibFlag('--train-memory-gib', gib);
  const k = a['kept-layers'].trim();
  if (k !== 'auto' && !/^\d+$/.test(k)) throw new RrrError(`--kept-layers: expected a whole number or auto, got '${a['kept-layers']}'`);
  return {
    ...(gib !== undefined && { budget: budgetBytes(gib) }),
    kept: k === 'auto' ? 'auto' : Number(k),
    kept16: a['kept-f16'],
    keptNorms: a['kept-norms'],
    keptSplit: a['kept-split'],
    ...(a['merge-adapter'] !== undefined && { merge: a['merge-adapter'] }),
    fuse: fuseAdapterOption(a['fuse-adapter']),
    flashAttn: flashAttnOption(a['flash-attn']),
    nodes: {
      fusedAttnBackward: a['fused-attn-backward'],
      fusedAttnF16: a['fused-attn-f16'],
      fusedMlpBackward: a['fused-mlp-backward'],
      fusedMerge: a['fused-merge'],
      fusedLoraBackward: a['fused-lora-backward'],
      fusedLora16: a['fused-lora-16'],
      mergeBf16: a['merge-bf16'],
      fusedHead: a['fused-head'],
      fusedNormBackward: a['fused-norm-backward'],
      gateUp16: a['gate-up-16'],
      swigluGrad16: a['swiglu-grad-16'],
      ...(a['node-waits'] !== undefined && { nodeWaits: a['node-waits'] }),
    },
  };
}

/** train's flags, each explained for --help. */
export function trainFlags<T>(y: Argv<T>) {
  return y
    .option('model', { type: 'string', describe: 'GGUF model to train (default: the embedded tiny random model, generated on first use)' })
    .option('task', { choices: TASK_NAMES, describe: 'task: synthetic (default), countdown, function-calling (how each scores an answer: README, "How answers are scored")' })
    .option('data', { type: 'string', describe: 'JSONL dataset for the task (countdown: {nums,target}; function-calling: APIGen/xLAM {query,tools,answers})' })
    .option('generate', { type: 'number', describe: 'without --data: number of task items to generate (default 64; synthetic and countdown)' })
    .option('limit', { type: 'number', describe: 'use only the first N items (default: all)' })
    .option('out', { type: 'string', describe: 'run folder: adapter, checkpoints, metrics.jsonl, summary.json (default runs/<task>-<time>)' })
    .option('resume', { type: 'boolean', default: false, describe: 'continue the run in --out from its last checkpoint (same settings, same results)' })
    .option('steps', { type: 'number', describe: 'GRPO steps (default 100; 60 for the embedded demo)' })
    .option('tasks-per-step', { type: 'number', describe: 'failed tasks per step, each gets --group-size reflections (default 4; 8 for the demo)' })
    .option('group-size', { type: 'number', describe: 'reflections per failed task, the GRPO group (default 8)' })
    .option('temperature', { type: 'number', describe: 'sampling temperature of reflections (default 1.0; the loss takes log-probs at 1 whatever this is)' })
    .option('retry-temperature', { type: 'number', describe: 'temperature of retries, 0 = greedy (default 0)' })
    .option('lr', { type: 'number', describe: 'peak learning rate (default 5e-5; 5e-3 for the embedded tiny model)' })
    .option('lr-schedule', { choices: ['cosine', 'constant'], describe: 'learning-rate schedule after warm-up (default cosine; constant for the embedded demo)' })
    .option('warmup-steps', { type: 'number', describe: 'linear warm-up steps (default 0)' })
    .option('beta', { type: 'number', describe: 'KL(π‖π_ref) coefficient against the base model (default 0)' })
    .option('clip-epsilon', { type: 'number', describe: 'PPO ratio clip ε (default 0.2)' })
    .option('max-grad-norm', { type: 'number', describe: 'global gradient-norm clip, 0 = off (default 1.0)' })
    .option('weight-decay', { type: 'number', describe: 'AdamW weight decay (default 0)' })
    .option('min-lr-ratio', { type: 'number', describe: 'cosine schedule: the learning rate at the last step, as a share of --lr (default 0.1)' })
    .option('advantage-std', {
      choices: ['sample', 'population'],
      describe: "the group's reward spread that divides its advantages: sample (n − 1, as TRL's torch.std; default) or population (n)",
    })
    .option('advantage-eps', { type: 'number', describe: 'added to that spread before dividing (default 1e-6)' })
    .option('passes-per-batch', {
      type: 'number',
      describe:
        "optimisation passes over each step's groups (default 1: the plain policy gradient). Each pass weighs a token by ρ = π/π_old against the log-probs its reflection was sampled with, clipped by --clip-epsilon: about 1 in the first pass, moved by the updates in later ones",
    })
    .option('rank', { type: 'number', describe: 'LoRA rank (default 16)' })
    .option('alpha', { type: 'number', describe: 'LoRA alpha (default 2 × rank)' })
    .option('lora-dropout', {
      type: 'number',
      describe: "LoRA dropout in [0, 1): the share of each adapter's inputs zeroed in training steps (new masks every step; generation and evaluation see none; default 0)",
    })
    .option('targets', { type: 'string', describe: `projections that get LoRA: comma list of q,k,v,o,gate,up,down (default ${ALL_TARGETS.join(',')})` })
    .option('max-reflection-tokens', { type: 'number', describe: 'longest reflection in tokens (default 128; 2 for the embedded tiny model)' })
    .option('max-answer-tokens', { type: 'number', describe: 'longest first attempt / retry in tokens (default 256; 10 for the embedded tiny model)' })
    .option('checkpoint-every', { type: 'number', describe: 'save a resumable checkpoint every N steps (and on Ctrl-C; default 10; a resumed run may change it)' })
    .option('seed', { type: 'number', describe: 'seed of data generation, task order and sampling (default 1)' })
    .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: 'auto' as const, describe: 'compute device' })
    .option('threads', { type: 'number', describe: 'CPU threads (default, or 0: all cores)' })
    .option('ctx', { type: 'number', describe: `longest sequence (prompt + reflection + retry) in tokens (default ${DEFAULT_CTX}, or the model's context if shorter; a resumed run may change it, checked to fit)` })
    .option('reuse-first-attempts', {
      type: 'boolean',
      default: true,
      describe:
        "a new run takes its first attempts from an earlier run with the same model file, items (--data, or --generate and --seed; --limit) and --max-answer-tokens, kept in the user's cache folder ($XDG_CACHE_HOME or ~/.cache, rrr-native/first-attempts); --no-reuse-first-attempts redoes them",
    })
    .option('skip-bad-lines', { type: 'boolean', default: false, describe: 'skip malformed dataset lines (reported) instead of stopping' })
    .option('train-memory-gib', {
      type: 'number',
      describe:
        "memory for each GRPO step's activations (its compute buffer), in GiB: a step that would need more is split into micro-batches (same gradients), and layers keep activations with what is left (--kept-layers). Default, read when training first starts: 80% of the GPU's free memory, or on the CPU half of the available RAM",
    })
    .option('kept-layers', {
      type: 'string',
      default: 'auto',
      describe:
        "layers that keep their costly activations instead of recomputing them in the backward pass (faster, more memory): a number, or auto = as many as fit --train-memory-gib",
    })
    .option('kept-f16', {
      type: 'boolean',
      describe:
        "layers that keep their activations (--kept-layers) hold the MLP's gate and up products in f16 instead of f32: 61% of the bytes, so the same memory keeps more layers; off by default: on a GPU the casts likely cost more time than recomputing a layer saves (an H200's profile ran ggml-cuda's casts at 0.5 to 0.6 TB/s), so this trades time for memory",
      default: false,
    })
    .option('kept-norms', {
      type: 'boolean',
      describe:
        "layers that keep their activations (--kept-layers) also keep their two norms' outputs (f32), which the adapters' gradients read, instead of rebuilding them: the same numbers, less work, more memory a kept layer; off by default: an H200 took 318 against 328 ms a step with it (16 GiB, every node of ours; 266 against 268 with --node-waits device), and its tests have not yet run on a GPU",
      default: false,
    })
    .option('kept-split', {
      type: 'boolean',
      default: true,
      describe:
        "with --kept-layers auto, where not every layer fits --train-memory-gib: also weigh splitting a batch into more micro-batches, whose smaller activations let more layers skip recomputation, and take the split whose planned work is least (the same gradients); --no-kept-split keeps the fewest micro-batches that fit",
    })
    .option('merge-adapter', {
      type: 'boolean',
      describe:
        "in each training step, multiply by the weights with the adapter merged in (W + s·B·A, rounded to the weights' type) instead of adding the adapter's own product; --no-merge-adapter never does. Default: on a GPU with f16 weights, no --lora-dropout and no --fuse-adapter (7% faster than fusing on an H200), else off",
    })
    .option('fuse-adapter', {
      choices: ['auto', 'bytes', 'on', 'off'] as const,
      default: 'auto' as const,
      describe:
        "without --merge-adapter, sum each adapter's B·(s·A·x) inside its weight's product [W | B]·[x ; s·A·x] instead of adding it (B and s·A·x in the weights' type; quantized bases keep the adapter path): bytes = where that moves fewer bytes, on = always, off = never, auto = bytes on a GPU, off on the CPU. It also joins the backward dx products of q/k/v and gate/up into one, merged or not: with --merge-adapter that is all it does (a GPU's default step is merged with bytes)",
    })
    .option('fused-attn-backward', {
      type: 'boolean',
      default: false,
      describe:
        `take attention back in one node of our own instead of ggml's ops (no attention probabilities kept or rebuilt for it, no permuting copies; on a GPU cuBLAS products in TF32 unless the weights are f32); off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-mlp-backward', {
      type: 'boolean',
      default: false,
      describe:
        `take the MLP's SwiGLU back in one node of our own instead of three of ggml's ops (one pass over its gate, up and their gradient instead of three), and in merged steps over 16-bit weights with --fused-merge its forward too (written in the down product's type); off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-merge', {
      type: 'boolean',
      default: false,
      describe:
        `where a step merges the adapter into the weights (--merge-adapter, a GPU's default with f16 weights): each W + s·B·A by one node of our own instead of three of ggml's ops (4 bytes a weight instead of 12); off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-lora-backward', {
      type: 'boolean',
      default: false,
      describe:
        `where a step merges the adapter into the weights (--merge-adapter, a GPU's default with f16 weights): take each group of adapters' gradients in two nodes of our own instead of about a dozen of ggml's ops an adapter; off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-lora-16', {
      type: 'boolean',
      default: false,
      describe:
        `with --fused-lora-backward and --fused-mlp-backward over 16-bit merged weights: the MLP's adapter gradients (gate, up, down) multiply 16-bit numbers with f32 sums, as PEFT's bf16 training does, and the SwiGLU node writes 16 bits alone; off by default: 16-bit precision there; ${TIMED_TOGETHER}`,
    })
    .option('fused-head', {
      type: 'boolean',
      default: false,
      describe:
        `take the LM head and the loss's gradient at it in one node of our own instead of a dozen of ggml's ops a chunk of loss rows: f32 logits written once and read twice, the gradient written over them in the head's type, the head multiplied as stored (f32, f16 or bf16 heads); off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-norm-backward', {
      type: 'boolean',
      default: false,
      describe:
        `take each layer's two RMS norms' backward passes in nodes of our own that also sum the projections' dx terms and add the residual's gradient, in one pass each, where ggml's ops take four or five; off by default: ${TIMED_TOGETHER}`,
    })
    .option('gate-up-16', {
      type: 'boolean',
      default: false,
      describe:
        `with --fused-mlp-backward and --fused-lora-backward, in merged steps: write the MLP's gate and up products in 16 bits (their merged weights' type) by a node of our own; the SwiGLU's nodes read them so and kept layers keep them so, half the bytes (f32 sums, rounded results, as PEFT's bf16 training); off by default: ${TIMED_TOGETHER}`,
    })
    .option('swiglu-grad-16', {
      type: 'boolean',
      default: false,
      describe:
        `with --gate-up-16: write the gradient at the SwiGLU (down's dx product) in 16 bits by our node too, read so by the SwiGLU's backward node; off by default: ${TIMED_TOGETHER}`,
    })
    .option('fused-attn-f16', {
      type: 'boolean',
      default: false,
      describe:
        `with --fused-attn-backward: its GPU products multiply f16 copies of Q, K, V, dO, the probabilities and their gradient (f32 sums) instead of f32 (TF32): 28 bytes per [L, L] number instead of 40; off by default: ${TIMED_TOGETHER}`,
    })
    .option('merge-bf16', {
      type: 'boolean',
      default: false,
      describe:
        `where a step merges the adapter into the weights: merge f16 and quantized weights into bf16, whose GPU products write f32 results directly instead of f16 ones converted after; 8 bits of mantissa instead of 11, and GeForce cards sum them at half their f16 rate; off by default: ${TIMED_TOGETHER}`,
    })
    .option('all-nodes', {
      type: 'boolean',
      default: false,
      describe:
        "a GPU's fastest measured step: every node of ours (--fused-attn-backward --fused-attn-f16 --fused-mlp-backward --fused-merge --merge-bf16 --fused-lora-backward --fused-lora-16 --fused-head --fused-norm-backward --gate-up-16 --swiglu-grad-16) and --node-waits device, whatever those flags say. An H200 ran 16 x 512 tokens of the Qwen2.5-1.5B shape at 1.20x to 1.31x PEFT's tok/s with them in a 16 GiB budget, against 0.71x for the default step; off by default until the GPU run of their tests is clean (README). Refused off a GPU",
    })
    .option('node-waits', {
      choices: ['host', 'device'] as const,
      describe:
        "on a GPU with any of our nodes (--fused-*): how each run of them and ggml-cuda's ops around it wait for each other. host (the default) = ggml's scheduler cuts the step into pieces and waits on the host at both ends of each run; device = our backend fronts ggml-cuda and the two CUDA streams wait for each other by events, the step one piece. An H200 (2026-11-27) ran the 16 GiB plan with every node of ours in 268 ms a step with device against 328 with host; device stays opt-in until the GPU tests have compared its numbers with host's",
    })
    .option('flash-attn', {
      choices: ['auto', 'on', 'off'] as const,
      default: 'auto' as const,
      describe:
        "flash attention in generation and in the training passes (auto: on for a GPU with a kernel for the model's head size; in a training step only the backward pass then builds attention probabilities)",
    })
    .option('json', { type: 'boolean', default: false, describe: 'print the run summary as JSON (progress goes to stderr)' });
}

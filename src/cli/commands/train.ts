import type { CommandModule } from 'yargs';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { freemem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Generator } from '../../engine/generator.js';
import { Model } from '../../engine/model.js';
import { gpuMemoryFree } from '../../engine/native.js';
import { Trainer } from '../../engine/trainer.js';
import { RrrError } from '../../engine/errors.js';
import type { DeviceName, LoraTarget, StepOptions, TrainerOptions } from '../../engine/types.js';
import { ConfigError, resolveGrpoConfig, type GrpoConfig } from '../../grpo/config.js';
import { EnginePolicy } from '../../rrr/engine-policy.js';
import { firstAttempts, readFailureCache, writeFailureCache, type FirstAttemptResult } from '../../rrr/failures.js';
import { MetricsLog, summarize } from '../../rrr/metrics.js';
import { runTraining, type LoopSettings } from '../../rrr/train.js';
import type { StepMetrics } from '../../rrr/types.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { DEFAULT_CTX, DEMO_SETTINGS, defaultLengths, ensureDefaultModel, isDemoModel } from '../default-model.js';
import { emitJson, say, shellArg, table } from '../output.js';
import { checkContext } from '../context-check.js';
import { integerFlag, keptLayersFlag, positiveFlag, seedFlag, threadsFlag } from '../flag-checks.js';
import { formatDuration, formatRate, Progress } from '../progress.js';
import { onInterrupt } from '../interrupt.js';
import { ALL_NODES, budgetInFlags, inFlags, refuseAllNodesOffGpu, flashAttnOption, fuseAdapterOption, type FlashAttnFlag, type FuseAdapterFlag } from '../step-flags.js';
import { lockRunFolder } from '../run-lock.js';
import { itemFlags, loadItems, taskFor, TASK_NAMES } from '../task-data.js';

const ALL_TARGETS: LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

interface Args {
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

/** Everything that defines a run; stored in run.json so --resume continues the same run. */
interface RunConfig extends LoopSettings {
  version: 1;
  model: string;
  modelBytes: number;
  task: string;
  data?: string;
  /** sha256 of --data's bytes when the run started; absent in runs made before it was kept. */
  dataSha256?: string;
  generate?: number;
  limit?: number;
  ctx: number;
  /** dropout: absent in runs made before --lora-dropout, which trained without it. */
  lora: { rank: number; alpha: number; targets: LoraTarget[]; dropout?: number };
}

/**
 * The flags buildConfig reads but --checkpoint-every and --ctx: what the run is, fixed in
 * run.json when it starts. How often it saves and the longest sequence it has room for are not
 * what it trains, so a resumed run may change them.
 */
const RUN_FLAGS = [
  'model', 'task', 'data', 'generate', 'limit', 'steps', 'tasks-per-step', 'group-size', 'temperature', 'retry-temperature', 'lr', 'lr-schedule',
  'warmup-steps', 'beta', 'clip-epsilon', 'max-grad-norm', 'weight-decay', 'rank', 'alpha', 'lora-dropout', 'targets', 'max-reflection-tokens',
  'max-answer-tokens', 'seed',
] as const satisfies readonly (keyof Args)[];

/** A run folder's run.json, refused in one line when it is not one this command wrote. */
function readRunConfig(path: string): RunConfig {
  let cfg: Partial<RunConfig>;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8')) as Partial<RunConfig>;
  } catch (e) {
    throw new RrrError(`${path}: not a run's settings (${(e as Error).message})`);
  }
  if (typeof cfg !== 'object' || cfg === null) throw new RrrError(`${path}: not a run's settings (a JSON ${cfg === null ? 'null' : typeof cfg})`);
  const bad = (['model', 'task'] as const).find((k) => typeof cfg[k] !== 'string') ?? (['steps', 'modelBytes', 'ctx'] as const).find((k) => typeof cfg[k] !== 'number');
  if (cfg.version !== 1 || bad || typeof cfg.lora !== 'object' || typeof cfg.grpo !== 'object') {
    throw new RrrError(`${path}: not a run's settings (${cfg.version !== 1 ? `version ${String(cfg.version)}, expected 1` : `no ${bad ?? 'lora or grpo'}`})`);
  }
  return cfg as RunConfig;
}

function parseTargets(s: string): LoraTarget[] {
  if (s.trim() === '') throw new RrrError('--targets: at least one projection is needed');
  const list = s.split(',').map((x) => x.trim());
  for (const t of list) {
    if (!ALL_TARGETS.includes(t as LoraTarget)) {
      throw new RrrError(`--targets: ${t ? `unknown projection '${t}'` : `an empty name in '${s}'`} (expected a comma list of ${ALL_TARGETS.join(',')})`);
    }
  }
  return list as LoraTarget[];
}

function modelSize(path: string): number {
  if (!existsSync(path)) throw new RrrError(`${path}: no such file`);
  return statSync(path).size;
}

function buildConfig(a: Args, model: string): RunConfig {
  itemFlags(a);
  const demo = isDemoModel(model);
  const lengths = defaultLengths(model);
  const rank = integerFlag('--rank', a.rank ?? 16);
  let grpo: GrpoConfig;
  try {
    grpo = resolveGrpoConfig({
      groupSize: a['group-size'],
      temperature: a.temperature,
      retryTemperature: a['retry-temperature'],
      learningRate: a.lr ?? (demo ? DEMO_SETTINGS.lr : undefined),
      lrSchedule: a['lr-schedule'] ?? (demo ? DEMO_SETTINGS.lrSchedule : undefined),
      warmupSteps: a['warmup-steps'],
      beta: a.beta,
      clipEpsilon: a['clip-epsilon'],
      maxGradNorm: a['max-grad-norm'],
      weightDecay: a['weight-decay'],
    });
  } catch (e) {
    if (e instanceof ConfigError) throw new RrrError(e.message);
    throw e;
  }
  return {
    version: 1,
    model,
    modelBytes: modelSize(model),
    task: a.task ?? 'synthetic',
    ...(a.data !== undefined && { data: resolve(a.data) }),
    ...(a.generate !== undefined && { generate: a.generate }),
    ...(a.limit !== undefined && { limit: a.limit }),
    steps: integerFlag('--steps', a.steps ?? (demo ? DEMO_SETTINGS.steps : 100)),
    tasksPerStep: integerFlag('--tasks-per-step', a['tasks-per-step'] ?? (demo ? DEMO_SETTINGS.tasksPerStep : 4)),
    seed: seedFlag(a.seed ?? 1),
    checkpointEvery: integerFlag('--checkpoint-every', a['checkpoint-every'] ?? 10),
    // The embedded tiny model is a toy: short outputs keep the demo to half a minute.
    maxReflectionTokens: integerFlag('--max-reflection-tokens', a['max-reflection-tokens'] ?? lengths.maxReflectionTokens),
    maxAnswerTokens: integerFlag('--max-answer-tokens', a['max-answer-tokens'] ?? lengths.maxAnswerTokens),
    ctx: integerFlag('--ctx', a.ctx ?? DEFAULT_CTX, 16),
    lora: { rank, alpha: a.alpha === undefined ? 2 * rank : positiveFlag('--alpha', a.alpha), targets: parseTargets(a.targets ?? ALL_TARGETS.join(',')), dropout: loraDropout(a['lora-dropout'] ?? 0) },
    grpo,
  };
}

/** The eval command for a run's adapter, with the lengths the run trained on where eval's defaults differ. */
export function evalCommand(cfg: RunConfig, adapter: string): string {
  const lengths = defaultLengths(cfg.model);
  const flags = [...(isDemoModel(cfg.model) ? [] : [`--model ${shellArg(cfg.model)}`]), `--adapter ${shellArg(adapter)}`, `--task ${cfg.task}`, cfg.data ? '--data <held-out.jsonl>' : `--seed ${cfg.seed + 1000}`];
  if (cfg.maxReflectionTokens !== lengths.maxReflectionTokens) flags.push(`--max-reflection-tokens ${cfg.maxReflectionTokens}`);
  if (cfg.maxAnswerTokens !== lengths.maxAnswerTokens) flags.push(`--max-answer-tokens ${cfg.maxAnswerTokens}`);
  if (cfg.ctx !== DEFAULT_CTX) flags.push(`--ctx ${cfg.ctx}`);
  return `rrr-native eval ${flags.join(' ')}`;
}

// Why each node switch is off by default, said once for all of them in --help.
const TIMED_TOGETHER = "an H200 timed it only with the other switches together (README: 1.20x PEFT's tok/s in 16 GiB with --node-waits device), and the GPU run of its tests is not yet clean";

/** The trainer's switches for our own nodes and bf16 merges, as the flags give them. */
type NodeSwitches = Pick<
  TrainerOptions,
  'fusedAttnBackward' | 'fusedAttnF16' | 'fusedMlpBackward' | 'fusedMerge' | 'fusedLoraBackward' | 'fusedLora16' | 'mergeBf16' | 'fusedHead' | 'fusedNormBackward' | 'gateUp16' | 'swigluGrad16' | 'nodeWaits'
>;

/**
 * --train-memory-gib, --kept-layers, --kept-f16, --kept-norms, --kept-split, --merge-adapter, --fuse-adapter,
 * --flash-attn and the node switches (--fused-*, --merge-bf16): how steps run, not what they
 * train, so they are not part of run.json and a resumed run may change them.
 */
function executionSettings(a: Args): {
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
  if (gib !== undefined) positiveFlag('--train-memory-gib', gib);
  const k = a['kept-layers'].trim();
  if (k !== 'auto' && !/^\d+$/.test(k)) throw new RrrError(`--kept-layers: expected a whole number or auto, got '${a['kept-layers']}'`);
  return {
    ...(gib !== undefined && { budget: Math.floor(gib * 2 ** 30) }),
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

function loraDropout(p: number): number {
  if (!(Number.isFinite(p) && p >= 0 && p < 1)) throw new RrrError(`--lora-dropout: expected a number in [0, 1), got ${p}`);
  return p;
}

/** How often a long first-attempt pass is saved. */
const FIRST_ATTEMPTS_SAVE_MS = 60_000;

function failureKey(c: RunConfig, dataDigest: string | undefined): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([c.model, c.modelBytes, c.task, c.data, c.generate, c.limit, c.seed, c.maxAnswerTokens]));
  if (c.data) {
    if (dataDigest === undefined) throw new Error(`internal error: no digest of ${c.data}`);
    h.update(dataDigest);
  }
  return h.digest('hex');
}

export const trainCommand: CommandModule<object, Args> = {
  command: 'train',
  describe: 'Train a LoRA adapter with Reflect, Retry, Reward (no arguments: a half-minute demo on a tiny built-in model)',
  builder: (y) =>
    y
      .option('model', { type: 'string', describe: 'GGUF model to train (default: the embedded tiny random model, generated on first use)' })
      .option('task', { choices: TASK_NAMES, describe: 'task: synthetic (default), countdown, function-calling' })
      .option('data', { type: 'string', describe: 'JSONL dataset for the task (countdown: {nums,target}; function-calling: APIGen/xLAM {query,tools,answers})' })
      .option('generate', { type: 'number', describe: 'without --data: number of task items to generate (default 64; synthetic and countdown)' })
      .option('limit', { type: 'number', describe: 'use only the first N items (default: all)' })
      .option('out', { type: 'string', describe: 'run folder: adapter, checkpoints, metrics.jsonl, summary.json (default runs/<task>-<time>)' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue the run in --out from its last checkpoint (same settings, same results)' })
      .option('steps', { type: 'number', describe: 'GRPO steps (default 100; 60 for the embedded demo)' })
      .option('tasks-per-step', { type: 'number', describe: 'failed tasks per step, each gets --group-size reflections (default 4; 8 for the demo)' })
      .option('group-size', { type: 'number', describe: 'reflections per failed task, the GRPO group (default 8)' })
      .option('temperature', { type: 'number', describe: 'sampling temperature of reflections (default 1.0)' })
      .option('retry-temperature', { type: 'number', describe: 'temperature of retries, 0 = greedy (default 0)' })
      .option('lr', { type: 'number', describe: 'peak learning rate (default 5e-5; 5e-3 for the embedded tiny model)' })
      .option('lr-schedule', { choices: ['cosine', 'constant'], describe: 'learning-rate schedule after warm-up (default cosine; constant for the embedded demo)' })
      .option('warmup-steps', { type: 'number', describe: 'linear warm-up steps (default 0)' })
      .option('beta', { type: 'number', describe: 'KL(π‖π_ref) coefficient against the base model (default 0)' })
      .option('clip-epsilon', { type: 'number', describe: 'PPO ratio clip ε (default 0.2)' })
      .option('max-grad-norm', { type: 'number', describe: 'global gradient-norm clip, 0 = off (default 1.0)' })
      .option('weight-decay', { type: 'number', describe: 'AdamW weight decay (default 0)' })
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
      .option('threads', { type: 'number', describe: 'CPU threads (default: all cores)' })
      .option('ctx', { type: 'number', describe: `longest sequence (prompt + reflection + retry) in tokens (default ${DEFAULT_CTX}, or the model's context if shorter; a resumed run may raise it)` })
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
      .option('json', { type: 'boolean', default: false, describe: 'print the run summary as JSON (progress goes to stderr)' }),
  handler: async (a) => {
    const execution = executionSettings(a);
    const mode = { json: a.json };
    const log = (line: string) => (a.json ? process.stderr.write(line + '\n') : say(mode, line));
    let out: string;
    let cfg: RunConfig;
    // Taken first for a run that exists (before loading what a running one already holds), and
    // for a new one where its folder is made.
    let unlock: (() => void) | undefined;
    if (a.resume) {
      if (!a.out) throw new RrrError('--resume needs --out, the run folder to continue');
      out = resolve(a.out);
      const runFile = join(out, 'run.json');
      if (!existsSync(runFile)) throw new RrrError(`${runFile}: not found, nothing to resume`);
      const given = RUN_FLAGS.find((f) => a[f] !== undefined);
      if (given) throw new RrrError(`--${given}: a resumed run keeps the settings in ${runFile}; start a new run (another --out) to change them`);
      cfg = readRunConfig(runFile);
      if (a['checkpoint-every'] !== undefined) cfg.checkpointEvery = integerFlag('--checkpoint-every', a['checkpoint-every']);
      if (a.ctx !== undefined) cfg.ctx = integerFlag('--ctx', a.ctx, 16);
      unlock = lockRunFolder(out);
      if (!existsSync(cfg.model) || statSync(cfg.model).size !== cfg.modelBytes) {
        throw new RrrError(`${cfg.model}: the run's model is missing or changed since the run started`);
      }
    } else {
      const model = a.model ? resolve(a.model) : await ensureDefaultModel(log);
      cfg = buildConfig(a, model);
      out = resolve(a.out ?? join('runs', `${cfg.task}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`));
      if (existsSync(out) && !statSync(out).isDirectory()) throw new RrrError(`--out ${out}: exists and is not a folder`);
      if (existsSync(join(out, 'run.json'))) throw new RrrError(`--out ${out}: already holds a run (use --resume to continue it, or another folder)`);
      // A run's files would mix with others' (--out . in a project, --out /): a new or empty folder.
      if (existsSync(out) && readdirSync(out).some((f) => f !== 'train.lock')) throw new RrrError(`--out ${out}: holds other files and no run; give a new or empty folder`);
    }
    if (execution.merge === true && (cfg.lora.dropout ?? 0) > 0) {
      throw new RrrError(`--merge-adapter: cannot merge an adapter trained with dropout (--lora-dropout ${cfg.lora.dropout}): its input differs from the weights'`);
    }
    const task = taskFor(cfg.task);
    if (a.resume && cfg.data && !existsSync(cfg.data)) throw new RrrError(`${cfg.data}: the run's --data file (in run.json) is missing`);
    const data = await loadItems(task, { data: cfg.data, generate: cfg.generate, limit: cfg.limit, seed: cfg.seed, skipBadLines: a['skip-bad-lines'] }, log);
    // A resumed run trains on the items it started with, or not at all.
    if (a.resume && cfg.data && cfg.dataSha256 && data.digest !== cfg.dataSha256) {
      throw new RrrError(`${cfg.data}: the run's --data file changed since the run started (its sha256 is not run.json's); restore it, or start a new run (another --out)`);
    }
    if (!a.resume && cfg.data) cfg.dataSha256 = data.digest;

    const model = await Model.load(cfg.model, { device: a.device, threads: threadsFlag(a.threads) });
    if (a['all-nodes']) {
      refuseAllNodesOffGpu('--all-nodes', model.info);
      execution.nodes = { ...execution.nodes, ...ALL_NODES };
    }
    keptLayersFlag('--kept-layers', execution.kept, model.info.nLayer);
    const ctx = Math.min(cfg.ctx, model.info.nCtxTrain);
    const maxSeqs = cfg.tasksPerStep * cfg.grpo.groupSize;
    const flash = { flashAttn: execution.flashAttn }; // undefined: the device's default
    let generator: Generator | undefined;
    let trainer: Trainer;
    try {
      generator = await Generator.create(model, { maxSeqs, nCtx: ctx, ...flash });
      // A new run's, or a resumed one's given --ctx (one that goes on as it was started may
      // predate this check).
      if (!a.resume || a.ctx !== undefined) {
        await checkContext(new EnginePolicy(model, generator), task, data.items, { ...cfg, modelCtx: model.info.nCtxTrain, silent: a.json });
      }
      trainer = await Trainer.create(
        model,
        { ...cfg.lora, seed: cfg.seed },
        { lr: cfg.grpo.learningRate, weightDecay: cfg.grpo.weightDecay, gradClip: cfg.grpo.maxGradNorm },
        { ...flash, ...execution.nodes },
      );
    } catch (e) {
      generator?.dispose();
      model.dispose();
      throw inFlags(e, '--', {}, a['all-nodes'] ? '--all-nodes' : undefined);
    }
    // Written once the data, the model and the trainer's options have passed, so a refused start
    // leaves no run folder.
    unlock ??= lockRunFolder(out);
    if (!a.resume) writeFileAtomic(join(out, 'run.json'), JSON.stringify(cfg, null, 2) + '\n');
    // Said once nothing can refuse the start, so a refusal stays one line on stderr under --json.
    if (!a.resume && isDemoModel(cfg.model)) log(`${a.model ? '--model' : 'no --model given:'} the embedded demo model (a tiny qwen2 that copies${cfg.task === 'synthetic' ? '; the synthetic secret-word task is its demo' : ''})`);
    log(`task ${cfg.task}: ${data.items.length} items from ${data.source}`);
    if (cfg.ctx > model.info.nCtxTrain) log(`--ctx ${cfg.ctx}: above the model's context, so sequences are held to its ${model.info.nCtxTrain} tokens`);
    log(
      `model ${cfg.model}: ${model.info.arch}, ${model.info.nLayer} layers, ${model.info.weightType}, on ${model.info.device}; ` +
        `LoRA r=${cfg.lora.rank}${cfg.lora.dropout ? `, dropout ${cfg.lora.dropout}` : ''} on ${cfg.lora.targets.join(',')} (${trainer.info.nParams.toLocaleString('en-US')} parameters); KV cache ${(generator.info.kvBytes / 2 ** 20).toFixed(0)} MiB` +
        (trainer.info.transposedWeightsBytes ? `; frozen weights kept transposed for the backward pass, ${(trainer.info.transposedWeightsBytes / 2 ** 20).toFixed(0)} MiB` : '') +
        `; flash attention ${generator.info.flashAttn ? 'on' : 'off'} in generation, ${trainer.info.flashAttn ? 'on' : 'off'} in training${trainer.info.fusedAttnBackward ? '; attention backward fused (--fused-attn-backward)' : ''}${trainer.info.fusedMlpBackward ? '; SwiGLU backward fused (--fused-mlp-backward)' : ''}${trainer.info.fusedMerge ? '; merged steps merge by our node (--fused-merge)' : ''}${trainer.info.fusedHead ? '; LM head and loss by our node (--fused-head)' : ''}${trainer.info.fusedNormBackward ? "; norms' backward by our nodes (--fused-norm-backward)" : ''}${trainer.info.gateUp16 ? `; steps merged into 16-bit weights write gate and up${trainer.info.swigluGrad16 ? " and the SwiGLU's gradient" : ''} in 16 bits (--gate-up-16${trainer.info.swigluGrad16 ? ' --swiglu-grad-16' : ''})` : ''}${trainer.info.fusedLoraBackward ? `; merged steps take the adapters' gradients in our nodes (--fused-lora-backward${trainer.info.fusedLora16 ? ", the MLP's in 16 bits: --fused-lora-16" : ''})` : ''}${trainer.info.nodeWaits === 'device' ? '; our nodes and ggml-cuda wait for each other on the GPU (--node-waits device)' : ''}`,
    );
    const policy = new EnginePolicy(model, generator);
    let lastFit = '';
    // Read once, at the first step, after generation has taken its own buffers: 80% of the
    // GPU's free memory, or half the RAM the system says is available (the model's mapped
    // weights count as available there, so less of it).
    let budgetAtStart: number | undefined;
    const defaultBudget = () => {
      budgetAtStart ??= Math.floor(
        model.info.gpu ? 0.8 * gpuMemoryFree() : 0.5 * freemem(),
      );
      return budgetAtStart;
    };
    const ckptState = join(out, 'checkpoint', 'state.gguf');
    const ckptProgress = join(out, 'checkpoint', 'progress.json');
    const metrics = new MetricsLog(join(out, 'metrics.jsonl'));
    const resume = `rrr-native train --resume --out ${shellArg(out)}`;
    let phase: 'first attempts' | 'steps' | 'done' = 'first attempts';
    const interrupt = onInterrupt(() =>
      phase === 'done'
        ? 'the run has done all its steps and is saving them'
        : phase === 'steps'
          ? 'the step in progress ends (dropped and redone on resume, unless it is already training) and a checkpoint is saved'
          : 'the batch of first attempts in progress ends (redone on resume) and the ones done are saved',
    );
    try {
      // Step 1: first attempts (the base model: no adapter is trained yet), cached per run and
      // saved as they go: over a large dataset they can take hours before the first step.
      const failuresPath = join(out, 'failures.json');
      const key = failureKey(cfg, data.digest);
      let first: FirstAttemptResult | undefined = readFailureCache(failuresPath, key);
      const total = data.items.length;
      if (first && first.attempted >= total) {
        log(`first attempts: reusing ${failuresPath} (${first.failures.length} failures of ${first.attempted})`);
      } else {
        if (first) log(`first attempts: going on after ${first.attempted} of ${total} (saved in ${failuresPath})`);
        const bar = new Progress('first attempts', total, { unit: 'task', silent: a.json, from: first?.attempted });
        let saved = Date.now();
        let doneSoFar = first?.attempted ?? 0;
        first = await firstAttempts(
          policy,
          task,
          data.items,
          {
            maxAnswerTokens: cfg.maxAnswerTokens,
            batchSize: maxSeqs,
            onProgress: (d) => bar.update((doneSoFar = d), ''),
            onTokens: (n) => bar.update(doneSoFar, `${n.toLocaleString('en-US')} tokens into this batch`),
            shouldStop: () => interrupt.requested,
            signal: interrupt.signal,
            // A crash or a second Ctrl-C loses at most about a minute of them.
            onBatch: (soFar) => {
              if (Date.now() - saved < FIRST_ATTEMPTS_SAVE_MS) return;
              writeFailureCache(failuresPath, key, soFar);
              saved = Date.now();
            },
          },
          first,
        );
        writeFailureCache(failuresPath, key, first);
        if (first.attempted < total) {
          bar.halt(`${first.correct}/${first.attempted} correct so far`);
          log(`interrupted during first attempts (${first.attempted} of ${total} done, saved). Continue with: ${resume}`);
          process.exitCode = 130;
          emitJson(mode, { out, stopped: true, firstAttempts: { attempted: first.attempted, of: total, correct: first.correct } });
          return;
        }
        bar.finish(`${first.correct}/${first.attempted} correct`);
      }
      phase = 'steps';
      if (first.failures.length === 0) throw new RrrError(`every first attempt succeeded: nothing to reflect on (use harder or more data, with another --out: ${out} holds this run's first attempts)`);

      let startStep = 0;
      if (a.resume && existsSync(ckptProgress)) {
        startStep = (JSON.parse(readFileSync(ckptProgress, 'utf8')) as { stepsDone: number }).stepsDone;
        await trainer.loadState(ckptState);
        log(`resuming after step ${startStep} of ${cfg.steps}`);
      }
      const done: StepMetrics[] = metrics.truncateFrom(startStep);
      generator.setAdapter(trainer);
      const t0 = Date.now();
      const live = Boolean(process.stderr.isTTY) && !a.json;
      let stepStart = t0;
      let stepsThisRun = 0;
      const result = await runTraining(
        policy,
        trainer,
        task,
        new Map(data.items.map((i) => [i.id, i])),
        first.failures,
        cfg,
        {
          // On a terminal, a step that samples for long shows its token count as it goes.
          onTokens: live
            ? (step, n) => {
                const secs = (Date.now() - stepStart) / 1000;
                process.stderr.write(`\r\x1b[2Kstep ${step + 1}/${cfg.steps}: sampling, ${n} tokens (${formatRate(n / Math.max(secs, 1e-3))} tok/s)`);
              }
            : undefined,
          onStep: (m) => {
            if (live) process.stderr.write('\r\x1b[2K');
            stepStart = Date.now();
            metrics.append(m);
            done.push(m);
            // What is left after the last step is its checkpoint and the summary: no step to stop.
            if (m.step + 1 === cfg.steps) phase = 'done';
            stepsThisRun++;
            const left = ((Date.now() - t0) / stepsThisRun) * (cfg.steps - m.step - 1);
            // How the step fitted in memory, the first time and when the split or kept layers change.
            const fit = m.microBatches
              ? `${m.microBatches} micro-batch${m.microBatches > 1 ? 'es' : ''}, ${m.keptLayers}/${model.info.nLayer} layers kept${m.keptLayers && execution.kept16 ? ' (gate and up in f16)' : ''}${m.keptLayers && execution.keptNorms ? ' (with their norms)' : ''}${m.adapterMerged ? ', adapter merged into the weights' : ''}`
              : '';
            log(
              `step ${m.step + 1}/${cfg.steps}  reward ${m.rewardMean.toFixed(3)}  solved-after-reflection ${(100 * m.successAfterReflection).toFixed(0)}%  ` +
                `groups ${m.groupsTrained} trained/${m.groupsSkipped} skipped  loss ${m.loss.toFixed(4)}  ` +
                `gen ${formatRate(m.generateTokensPerSec)} tok/s  train ${m.groupsTrained ? `${formatRate(m.trainTokensPerSec)} tok/s` : '- (no group to train)'}  ETA ${formatDuration(left / 1000)}` +
                (fit && fit !== lastFit ? `  (training step: ${fit}, ${(m.trainComputeBytes / 2 ** 20).toFixed(0)} MiB compute buffer)` : '') +
                (m.updateSkipped ? `  update skipped: ${m.updateSkipped.replace(/^step: /, '')}` : ''),
            );
            if (fit) lastFit = fit;
          },
          checkpoint: async (stepsDone) => {
            mkdirSync(dirname(ckptState), { recursive: true });
            await trainer.saveState(ckptState);
            await trainer.saveAdapter(join(out, 'adapter.gguf'));
            writeFileAtomic(ckptProgress, JSON.stringify({ stepsDone }) + '\n');
          },
          shouldStop: () => interrupt.requested,
          signal: interrupt.signal,
          stepExecution: () => {
            const budget = execution.budget ?? defaultBudget();
            return {
              ...(budget > 0 && { memoryBudget: budget }),
              keptLayers: execution.kept === 'auto' ? (budget > 0 ? 'auto' : 0) : execution.kept,
              mergeAdapter: execution.merge,
              fuseAdapter: execution.fuse,
              keptF16: execution.kept16,
              keptNorms: execution.keptNorms,
              keptSplit: execution.keptSplit,
            };
          },
        },
        startStep,
      );
      const summary = summarize(done, first, first.failures.length);
      writeFileAtomic(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
      if (result.stopped) {
        log(`interrupted after step ${result.stepsDone}; checkpoint saved. Continue with: ${resume}`);
        process.exitCode = 130;
      }
      emitJson(mode, { out, stopped: result.stopped, adapter: join(out, 'adapter.gguf'), evalCommand: evalCommand(cfg, join(out, 'adapter.gguf')), ...summary });
      say(mode, '');
      say(
        mode,
        table(
          ['', 'value'],
          [
            ['first attempts correct', `${first.correct}/${first.attempted}`],
            ['steps', summary.steps],
            ['reward (first → last quarter of steps)', `${summary.rewardFirstQuarter.toFixed(3)} → ${summary.rewardLastQuarter.toFixed(3)}`],
            ['solved after reflection', `${(100 * summary.successAfterReflectionFirstQuarter).toFixed(0)}% → ${(100 * summary.successAfterReflectionLastQuarter).toFixed(0)}%`],
            ['groups trained / skipped (all-equal rewards)', `${summary.groupsTrained} / ${summary.groupsSkipped}`],
            ['tokens generated / trained', `${summary.generatedTokens} / ${summary.trainTokens}`],
          ],
        ),
      );
      say(mode, `\nadapter: ${join(out, 'adapter.gguf')} (llama.cpp --lora compatible); metrics: ${metrics.path}`);
      say(mode, `evaluate it: ${evalCommand(cfg, join(out, 'adapter.gguf'))}`);
    } catch (e) {
      // The run folder outlives a refused step or a retry longer than --ctx: say how to go on,
      // with a larger --train-memory-gib or --ctx, which a resumed run may change.
      if (e instanceof RrrError && e.message.startsWith('step: ')) {
        budgetInFlags(e, '--max-answer-tokens, --max-reflection-tokens');
        e.message += `; the run continues from its last checkpoint with: ${resume}`;
      }
      if (e instanceof RrrError && e.message.startsWith('context overflow')) e.message = `--ctx ${cfg.ctx}: ${e.message}; the run continues from its last checkpoint with: ${resume} --ctx <more>`;
      throw e;
    } finally {
      unlock();
      interrupt.dispose();
      generator.dispose();
      trainer.dispose();
      model.dispose();
    }
  },
};

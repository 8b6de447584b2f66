// The flags train and bench share for how a training step runs, turned into the engine's
// options. 'auto' leaves the engine's default (undefined).
import { RrrError } from '../engine/errors.js';
import type { StepOptions, TrainerOptions } from '../engine/types.js';

export type FlashAttnFlag = 'auto' | 'on' | 'off';
export type FuseAdapterFlag = 'auto' | 'bytes' | 'on' | 'off';

/** --flash-attn as Generator / TrainerOptions.flashAttn. */
export function flashAttnOption(flag: FlashAttnFlag): boolean | undefined {
  return flag === 'auto' ? undefined : flag === 'on';
}

/** --fuse-adapter as StepOptions.fuseAdapter. */
export function fuseAdapterOption(flag: FuseAdapterFlag): StepOptions['fuseAdapter'] {
  return flag === 'auto' ? undefined : flag === 'bytes' ? 'bytes' : flag === 'on';
}

/**
 * --all-nodes (train) and --train-all-nodes (bench): every switch that puts a node of ours in a
 * GPU's training step, 16-bit gate, up and SwiGLU gradient, bf16 merges, and device-side waits.
 * The fastest set an H200 timed (2026-11-27, 16 x 512 tokens of the Qwen2.5-1.5B shape in 16
 * GiB: 1.20x to 1.31x PEFT's tok/s against 0.71x for the default step); off by default until the
 * GPU run of these nodes' tests is clean (README).
 */
export const ALL_NODES = {
  fusedAttnBackward: true,
  fusedAttnF16: true,
  fusedMlpBackward: true,
  fusedMerge: true,
  mergeBf16: true,
  fusedLoraBackward: true,
  fusedLora16: true,
  fusedHead: true,
  fusedNormBackward: true,
  gateUp16: true,
  swigluGrad16: true,
  nodeWaits: 'device',
} as const satisfies Partial<TrainerOptions>;

/**
 * The flags, less train's '--' or bench's '--train-', that set the TrainerOptions both commands
 * take; --flash-attn is spelled the same in both.
 */
const TRAINER_FLAGS = {
  fusedAttnBackward: 'fused-attn-backward',
  fusedAttnF16: 'fused-attn-f16',
  fusedMlpBackward: 'fused-mlp-backward',
  fusedMerge: 'fused-merge',
  mergeBf16: 'merge-bf16',
  fusedLoraBackward: 'fused-lora-backward',
  fusedLora16: 'fused-lora-16',
  fusedHead: 'fused-head',
  fusedNormBackward: 'fused-norm-backward',
  gateUp16: 'gate-up-16',
  swigluGrad16: 'swiglu-grad-16',
  nodeWaits: 'node-waits',
} as const satisfies Record<keyof typeof ALL_NODES, string>;

/**
 * The trainer refuses options by their TrainerOptions names ("fusedAttnF16: ...; give
 * fusedAttnBackward too"): the same error, said in the flags of the command that gave them
 * (`prefix` '--' for train, '--train-' for bench; `own` for the command's other flags). Where
 * `allNodes` (--all-nodes, --train-all-nodes) set them, it is named with the one at fault.
 */
export function inFlags(e: unknown, prefix: '--' | '--train-', own: Partial<Record<keyof TrainerOptions, string>> = {}, allNodes?: string): unknown {
  if (!(e instanceof Error)) return e;
  const flags: Record<string, string> = { flashAttn: '--flash-attn', ...own };
  for (const [key, flag] of Object.entries(TRAINER_FLAGS)) flags[key] = allNodes ? `${allNodes} (${prefix}${flag})` : prefix + flag;
  e.message = e.message.replace(new RegExp(`\\b(${Object.keys(flags).join('|')})\\b`, 'g'), (key) => flags[key]!);
  return e;
}

/**
 * A step refused by its memory budget, or one the device had no memory for, in the command's
 * flags: the budget is --train-memory-gib in train and bench alike, the sequences come from
 * `sequences` (train's token limits, bench's --train-len), and bench alone sets micro-batches
 * (`microBatchFlag`).
 */
export function budgetInFlags(e: unknown, sequences: string, microBatchFlag?: string): unknown {
  if (e instanceof Error && e.message.startsWith('step: ')) {
    e.message = e.message.replace('(memoryBudget)', '(--train-memory-gib)').replace('use shorter sequences', `use shorter sequences (${sequences})`);
  } else if (e instanceof Error && e.message.includes('out of memory for the ')) {
    // The device ran out below the plan's estimate.
    e.message = e.message.replace('a smaller memoryBudget or microBatchTokens', `a smaller --train-memory-gib${microBatchFlag ? ` or ${microBatchFlag}` : ''}`);
  }
  return e;
}

/** Refuses `flag` (--all-nodes, --train-all-nodes) in one line where the model is not on a GPU. */
export function refuseAllNodesOffGpu(flag: string, model: { device: string; gpu: boolean }): void {
  if (!model.gpu) throw new RrrError(`${flag}: every node of ours and their waits on the device are for a GPU; this model is on ${model.device} (each node would run as the CPU's plain loops)`);
}

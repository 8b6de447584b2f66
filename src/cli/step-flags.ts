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

/** Refuses `flag` (--all-nodes, --train-all-nodes) in one line where the model is not on a GPU. */
export function refuseAllNodesOffGpu(flag: string, model: { device: string; gpu: boolean }): void {
  if (!model.gpu) throw new RrrError(`${flag}: every node of ours and their waits on the device are for a GPU; this model is on ${model.device} (each node would run as the CPU's plain loops)`);
}

// The flags train and bench share for how a training step runs, turned into the engine's
// options. 'auto' leaves the engine's default (undefined).
import type { StepOptions } from '../engine/types.js';

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

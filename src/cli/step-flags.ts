// The flags train and bench share for how a training step runs, turned into the engine's
// options. 'auto' leaves the engine's default (undefined).
import { RrrError } from '../engine/errors.js';
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

/** Fusing the adapter into weights that already hold it merged is refused, naming both flags. */
export function refuseFuseWithMerge(merge: boolean | undefined, fuse: FuseAdapterFlag, names: { merge: string; fuse: string }): void {
  if (merge === true && (fuse === 'on' || fuse === 'bytes')) {
    throw new RrrError(`${names.fuse} ${fuse}: cannot be combined with ${names.merge} (the merged weights already hold the adapter)`);
  }
}

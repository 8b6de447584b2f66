// The build and the compute devices the addon sees: for `info`, and for memory budgets read
// from what a GPU has free.
import { addon } from './native.js';
import type { BuildInfo, DeviceInfo } from './types.js';

export function buildInfo(): BuildInfo {
  return addon().buildInfo();
}

export function devices(): DeviceInfo[] {
  return addon().devices();
}

/** Bytes free now on all GPUs together (0 without one). */
export function gpuMemoryFree(): number {
  return devices()
    .filter((d) => d.type === 'gpu')
    .reduce((a, d) => a + d.memoryFree, 0);
}

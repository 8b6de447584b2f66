// Which failed tasks a step trains on, and with which sampling seed, as pure functions of the
// step number: a resumed run replays exactly what an uninterrupted one would have done.
import { Rng } from '../util/rng.js';

export function stepSeed(runSeed: number, step: number): number {
  return ((runSeed >>> 0) * 1_000_003 + step * 7_919) % 2_147_483_647;
}

/** Indices into the failure list for `step`: each epoch is a fresh seeded shuffle. */
export function stepIndices(nFailures: number, tasksPerStep: number, runSeed: number, step: number): number[] {
  if (nFailures === 0) return [];
  const out: number[] = [];
  const orders = new Map<number, number[]>();
  for (let k = 0; k < Math.min(tasksPerStep, nFailures); k++) {
    const global = step * tasksPerStep + k;
    const epoch = Math.floor(global / nFailures);
    let order = orders.get(epoch);
    if (!order) {
      order = new Rng(stepSeed(runSeed, epoch) ^ 0x5bd1e995).shuffle(Array.from({ length: nFailures }, (_, i) => i));
      orders.set(epoch, order);
    }
    out.push(order[global % nFailures]!);
  }
  return out;
}

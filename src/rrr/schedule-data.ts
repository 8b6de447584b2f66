// Which failed tasks a step trains on, and with which sampling seed, as pure functions of the
// step number: a resumed run replays exactly what an uninterrupted one would have done.
import { Rng } from '../util/rng.js';

export function stepSeed(runSeed: number, step: number): number {
  return ((runSeed >>> 0) * 1_000_003 + step * 7_919) % 2_147_483_647;
}

/**
 * Indices into the failure list for `step`. Schedule 2 (runs started since it exists): epochs of
 * ⌈n / k⌉ whole steps over one seeded shuffle each, the last step of an epoch wrapping round to
 * its start, so a step never takes a failure twice and an epoch takes every one at least once.
 * Schedule 1 (older runs, kept so they resume the same): k positions a step along a sequence of
 * shuffles, where a step across two of them could take one failure twice.
 */
export function stepIndices(nFailures: number, tasksPerStep: number, runSeed: number, step: number, schedule: 1 | 2 = 2): number[] {
  if (schedule === 1) return stepIndicesV1(nFailures, tasksPerStep, runSeed, step);
  if (nFailures === 0) return [];
  const k = Math.min(tasksPerStep, nFailures);
  const perEpoch = Math.ceil(nFailures / k);
  const epoch = Math.floor(step / perEpoch);
  const order = epochOrder(nFailures, runSeed, epoch);
  const first = (step % perEpoch) * k;
  return Array.from({ length: k }, (_, i) => order[(first + i) % nFailures]!);
}

function epochOrder(nFailures: number, runSeed: number, epoch: number): number[] {
  return new Rng(stepSeed(runSeed, epoch) ^ 0x5bd1e995).shuffle(Array.from({ length: nFailures }, (_, i) => i));
}

function stepIndicesV1(nFailures: number, tasksPerStep: number, runSeed: number, step: number): number[] {
  if (nFailures === 0) return [];
  const out: number[] = [];
  const orders = new Map<number, number[]>();
  for (let k = 0; k < Math.min(tasksPerStep, nFailures); k++) {
    const global = step * tasksPerStep + k;
    const epoch = Math.floor(global / nFailures);
    let order = orders.get(epoch);
    if (!order) {
      order = epochOrder(nFailures, runSeed, epoch);
      orders.set(epoch, order);
    }
    out.push(order[global % nFailures]!);
  }
  return out;
}

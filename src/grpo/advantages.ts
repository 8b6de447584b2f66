/**
 * Group-relative advantages (GRPO): A_i = (r_i − mean(r)) / (std(r) + ε)
 * within one group of G reflections for the same failed task.
 *
 * std is the SAMPLE standard deviation (divide by G − 1) by default. That is
 * what TRL's GRPOTrainer computes (torch.Tensor.std is unbiased by default),
 * so advantages here match the reference implementation the RRR authors
 * built on, but for ε (1e-6 by default here, 1e-4 there). The sample std is larger than the population one by
 * sqrt(G / (G − 1)), so advantages are smaller by that factor: rewards
 * [1, 0, 0, 0] give [1.5, −0.5, −0.5, −0.5] here, [√3, −1/√3, …] with
 * `std: 'population'` (divide by G), which is available for comparison.
 *
 * A group whose rewards are all equal (all failed or all succeeded) has no
 * signal: every advantage would be 0. It is reported as skipped so the loop
 * can leave it out of the batch and count it in the metrics.
 */
import type { StdKind } from './types.js';

export interface GroupAdvantages {
  /** One per reward; all 0 when skipped. */
  advantages: number[];
  mean: number;
  std: number;
  /** True when every reward is equal (including groups of one). */
  skipped: boolean;
}

export function groupAdvantages(
  rewards: readonly number[],
  eps = 1e-6,
  opts: { std?: StdKind } = {},
): GroupAdvantages {
  if (rewards.length === 0) throw new RangeError('groupAdvantages: empty group');
  if (!rewards.every(Number.isFinite)) throw new RangeError('groupAdvantages: rewards must be finite numbers');
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new RangeError(`groupAdvantages: eps must be ≥ 0 (got ${eps})`);

  const n = rewards.length;
  const mean = rewards.reduce((s, r) => s + r, 0) / n;
  const first = rewards[0] as number;
  if (rewards.every((r) => r === first)) {
    return { advantages: new Array<number>(n).fill(0), mean, std: 0, skipped: true };
  }
  const ss = rewards.reduce((s, r) => s + (r - mean) * (r - mean), 0);
  const kind = opts.std ?? 'sample';
  const std = Math.sqrt(ss / (kind === 'sample' ? n - 1 : n));
  return { advantages: rewards.map((r) => (r - mean) / (std + eps)), mean, std, skipped: false };
}

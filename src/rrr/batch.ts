// From scored groups to training sequences: each sequence is a reflection prompt followed by
// one sampled reflection, weighted by that reflection's group advantage on the reflection
// tokens only (prompt, first attempt and retry carry weight 0).
import { groupAdvantages } from '../grpo/advantages.js';
import type { StdKind } from '../grpo/types.js';
import { reflectionWeights } from '../grpo/weights.js';
import type { TrainSequence } from '../engine/types.js';
import type { Group } from './types.js';

export interface TrainBatch {
  sequences: TrainSequence[];
  groupsTrained: number;
  groupsSkipped: number;
  /** Σ m: reflection tokens that carry a weight. */
  maskSum: number;
}

export function buildTrainBatch(groups: Group[], opts: { eps: number; std: StdKind }): TrainBatch {
  const sequences: TrainSequence[] = [];
  let skipped = 0;
  let trained = 0;
  let maskSum = 0;
  for (const g of groups) {
    const adv = groupAdvantages(g.rewards, opts.eps, { std: opts.std });
    if (adv.skipped) {
      skipped++;
      continue;
    }
    trained++;
    const P = g.reflectPrompt.length;
    const tokens = g.reflections.map((r) => {
      const t = new Int32Array(P + r.tokens.length);
      t.set(g.reflectPrompt, 0);
      t.set(r.tokens, P);
      return t;
    });
    const w = reflectionWeights(
      tokens.map((t) => t.length),
      tokens.map((t) => ({ start: P, end: t.length })),
      adv.advantages,
    );
    maskSum += w.maskSum;
    tokens.forEach((t, i) => {
      const r = g.reflections[i]!;
      const old = new Float32Array(t.length);
      old.set(r.logprobs, P);
      // An empty reflection has nothing to train on. The mask is given, not left to the engine's
      // weights ≠ 0: a reflection whose advantage is 0 (a reward equal to its group's mean) still
      // counts in Σm, as maskSum says.
      if (r.tokens.length > 0) sequences.push({ tokens: t, weights: w.weights[i]!, mask: w.masks[i]!, oldLogprobs: old });
    });
  }
  return { sequences, groupsTrained: trained, groupsSkipped: skipped, maskSum };
}

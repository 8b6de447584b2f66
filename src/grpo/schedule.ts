/**
 * Learning-rate schedule, as a pure function of the optimizer step so that a
 * resumed run gets exactly the same rates.
 *
 * Steps are 0-based optimizer steps; totalSteps is how many there will be.
 *   warm-up  (step < W):  lr = base · (step + 1) / W
 *            Starting at base/W rather than 0 means no step is wasted with a
 *            zero rate.
 *   cosine   (W ≤ step):  p = (step − W) / (T − W), clamped to [0, 1]
 *                         lr = base · (r + (1 − r) · ½ · (1 + cos(π·p)))
 *            so the first step after warm-up runs at base and the rate falls
 *            towards base·r, reached at step T (i.e. after the last step).
 *   constant (W ≤ step):  lr = base
 * r is minLrRatio. The same conventions as the usual cosine-with-warm-up
 * schedulers, apart from the warm-up offset by one.
 */
import type { LrSchedule } from './types.js';

export function validateSchedule(s: LrSchedule): void {
  if (s.kind !== 'cosine' && s.kind !== 'constant') {
    throw new RangeError(`schedule kind must be "cosine" or "constant" (got ${String(s.kind)})`);
  }
  if (!(s.baseLr > 0) || !Number.isFinite(s.baseLr)) throw new RangeError(`learning rate must be > 0 (got ${s.baseLr})`);
  if (!Number.isSafeInteger(s.totalSteps) || s.totalSteps < 1) {
    throw new RangeError(`total steps must be an integer ≥ 1 (got ${s.totalSteps})`);
  }
  if (!Number.isSafeInteger(s.warmupSteps) || s.warmupSteps < 0 || s.warmupSteps > s.totalSteps) {
    throw new RangeError(`warm-up steps must be an integer in [0, ${s.totalSteps}] (got ${s.warmupSteps})`);
  }
  if (!(s.minLrRatio >= 0 && s.minLrRatio <= 1)) {
    throw new RangeError(`minimum learning-rate ratio must be in [0, 1] (got ${s.minLrRatio})`);
  }
}

export function learningRate(step: number, s: LrSchedule): number {
  validateSchedule(s);
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step must be an integer ≥ 0 (got ${step})`);
  const { baseLr: base, warmupSteps: w, totalSteps: t } = s;
  if (step < w) return (base * (step + 1)) / w;
  if (s.kind === 'constant') return base;
  const p = Math.min(1, (step - w) / Math.max(1, t - w));
  return base * (s.minLrRatio + (1 - s.minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * p)));
}

/**
 * GRPO settings of the RRR trainer, their defaults and validation. Every
 * validation error is one line naming the command-line flag, so the CLI can
 * print it as is.
 *
 * Defaults and why:
 *   groupSize 8          G reflections per failed task, as in the paper.
 *   temperature 1.0      reflections are sampled at T = 1, as in the paper;
 *                        diversity inside a group is what produces signal.
 *                        The loss takes log-probs at T = 1 whatever the
 *                        sampling temperature (TRL divides the logits by T
 *                        in both), so at T ≠ 1 the samples come from another
 *                        distribution than the one trained.
 *   retryTemperature 0   the retry is greedy, so its reward reflects the
 *                        reflection rather than sampling luck.
 *   clipEpsilon 0.2      the usual PPO/GRPO clip range. With one
 *                        optimisation pass per batch ρ = 1 and it never binds.
 *   beta 0               no KL penalty by default, like current TRL GRPO.
 *                        The LoRA adapter already keeps the policy close to
 *                        the base model and the paper reports no forgetting;
 *                        β = 0 also saves the reference forward pass. Set a
 *                        small value (e.g. 0.01–0.04) to add KL(π‖π_ref).
 *   learningRate 5e-5    for LoRA: full-model RL fine-tuning typically uses
 *                        1e-6…5e-6 and LoRA wants roughly 10× the full-model
 *                        rate; 5e-5 sits at the careful end of that. Unlike
 *                        TRL, whose normaliser also counts the tokens of
 *                        groups with equal rewards (at advantage 0), Σm here
 *                        counts only the trained groups' reflection tokens,
 *                        as DESIGN's loss: where most groups are skipped a
 *                        token's gradient is that much larger than TRL's at
 *                        the same rate (the gradient-norm clip bounds it).
 *   lrSchedule cosine, warmupSteps 0, minLrRatio 0.1.
 *   advantageEps 1e-6, advantageStd "sample" (see advantages.ts; TRL adds
 *                        1e-4: 2.4749 against 2.4742 for one success in 8).
 *   weightDecay 0        AdamW decay on LoRA weights is of little use.
 *   maxGradNorm 1.0      global gradient-norm clipping; 0 turns it off.
 *   passesPerBatch 1     optimisation passes over each batch of groups.
 */
import type { GrpoConfig } from './types.js';

export const DEFAULT_GRPO_CONFIG: Readonly<GrpoConfig> = Object.freeze({
  groupSize: 8,
  temperature: 1.0,
  retryTemperature: 0,
  clipEpsilon: 0.2,
  beta: 0,
  learningRate: 5e-5,
  lrSchedule: 'cosine',
  warmupSteps: 0,
  minLrRatio: 0.1,
  advantageEps: 1e-6,
  advantageStd: 'sample',
  weightDecay: 0,
  maxGradNorm: 1.0,
  passesPerBatch: 1,
});

/** The command-line flag of each setting, used in error messages. */
export const GRPO_FLAGS: Readonly<Record<keyof GrpoConfig, string>> = Object.freeze({
  groupSize: '--group-size',
  temperature: '--temperature',
  retryTemperature: '--retry-temperature',
  clipEpsilon: '--clip-epsilon',
  beta: '--beta',
  learningRate: '--lr',
  lrSchedule: '--lr-schedule',
  warmupSteps: '--warmup-steps',
  minLrRatio: '--min-lr-ratio',
  advantageEps: '--advantage-eps',
  advantageStd: '--advantage-std',
  weightDecay: '--weight-decay',
  maxGradNorm: '--max-grad-norm',
  passesPerBatch: '--passes-per-batch',
});

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    message: string,
    readonly flag?: string,
  ) {
    super(message);
  }
}

type Check = (v: unknown) => string | null;

const shown = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

const num =
  (ok: (x: number) => boolean, expected: string): Check =>
  (v) =>
    typeof v === 'number' && Number.isFinite(v) && ok(v) ? null : `must be ${expected} (got ${shown(v)})`;

const int =
  (lo: number, hi: number): Check =>
  (v) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= lo && v <= hi
      ? null
      : `must be an integer in [${lo}, ${hi}] (got ${shown(v)})`;

const oneOf =
  (...choices: string[]): Check =>
  (v) =>
    typeof v === 'string' && choices.includes(v)
      ? null
      : `must be one of ${choices.map((c) => `"${c}"`).join(', ')} (got ${shown(v)})`;

const CHECKS: Readonly<Record<keyof GrpoConfig, Check>> = {
  groupSize: int(2, 1024),
  // Below 0.001 a group's reflections are one, as at 0; far above 1 they are noise (1e300
  // overflowed the addon's f32 and was refused there, naming no flag).
  temperature: num((x) => x >= 1e-3 && x <= 100, 'a number in [0.001, 100] (at 0 every reflection of a group is the same)'),
  retryTemperature: num((x) => x >= 0 && x <= 100, 'a number in [0, 100] (0 = greedy)'),
  clipEpsilon: num((x) => x > 0 && x < 1, 'a number in (0, 1)'),
  beta: num((x) => x >= 0, 'a number ≥ 0'),
  learningRate: num((x) => x > 0 && x <= 1, 'a number in (0, 1]'),
  lrSchedule: oneOf('cosine', 'constant'),
  warmupSteps: int(0, Number.MAX_SAFE_INTEGER),
  minLrRatio: num((x) => x >= 0 && x <= 1, 'a number in [0, 1]'),
  advantageEps: num((x) => x >= 0, 'a number ≥ 0'),
  advantageStd: oneOf('sample', 'population'),
  weightDecay: num((x) => x >= 0, 'a number ≥ 0'),
  maxGradNorm: num((x) => x >= 0, 'a number ≥ 0 (0 = no clipping)'),
  passesPerBatch: int(1, 64),
};

/**
 * Defaults overlaid with the given settings (undefined values are ignored, so
 * unset CLI options can be passed straight through), then validated. Unknown
 * keys are errors: a typo in a config file should not be silently ignored.
 */
export function resolveGrpoConfig(overrides: Readonly<Record<string, unknown>> = {}): GrpoConfig {
  const out: Record<string, unknown> = { ...DEFAULT_GRPO_CONFIG };
  for (const [key, value] of Object.entries(overrides)) {
    if (!(key in CHECKS)) throw new ConfigError(`unknown GRPO setting "${key}"`);
    if (value !== undefined) out[key] = value;
  }
  for (const key of Object.keys(CHECKS) as (keyof GrpoConfig)[]) {
    const problem = CHECKS[key](out[key]);
    if (problem !== null) throw new ConfigError(`${GRPO_FLAGS[key]}: ${problem}`, GRPO_FLAGS[key]);
  }
  return out as unknown as GrpoConfig;
}

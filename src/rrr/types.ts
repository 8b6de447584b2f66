// The contract of the RRR layer: what it needs from the engine (a Policy that generates and a
// Learner that takes training steps) and what it reports (metrics, summaries).
import type { Completion, GenerateOptions, GenerateRequest, StepOptions, StepResult, TrainSequence } from '../engine/types.js';
import type { GrpoConfig } from '../grpo/types.js';
import type { ChatMessage } from '../tasks/types.js';

/** Turns conversations into prompt tokens and samples completions (base model or base + adapter). */
export interface Policy {
  promptTokens(messages: ChatMessage[]): Int32Array;
  generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]>;
}

export interface Learner {
  step(batch: TrainSequence[], opts: StepOptions): Promise<StepResult>;
}

/** A first attempt that failed: the start of every RRR episode. */
export interface Failure {
  itemId: string;
  firstAnswer: string;
  reason: string;
}

/** One failed task after reflect + retry: G reflections, their retries and rewards. */
export interface Group {
  itemId: string;
  /** Tokens of the reflection prompt (first prompt + first answer + reflection request). */
  reflectPrompt: Int32Array;
  reflections: Completion[];
  retries: Completion[];
  rewards: number[];
  reasons: string[];
}

export interface StepMetrics {
  step: number;
  lr: number;
  tasks: number;
  groupsTrained: number;
  groupsSkipped: number;
  /** Mean retry reward over all reflections of the step. */
  rewardMean: number;
  /** Fraction of tasks with at least one successful retry. */
  successAfterReflection: number;
  loss: number;
  kl: number;
  gradNorm: number;
  meanRatio: number;
  reflectionTokensMean: number;
  generatedTokens: number;
  generateTokensPerSec: number;
  trainTokens: number;
  trainTokensPerSec: number;
  /**
   * How the GRPO step ran: micro-batches, layers that kept their activations, whether the adapter
   * was merged into the weights (StepOptions.mergeAdapter), compute buffer held (0 when nothing
   * was trained).
   */
  microBatches: number;
  keptLayers: number;
  adapterMerged: boolean;
  trainComputeBytes: number;
  seconds: number;
  /** Set when the step's gradient was not finite and its update was dropped: why. */
  updateSkipped?: string;
}

/** What the loop runs (train.ts's runTraining): the CLI keeps these in run.json. */
export interface LoopSettings {
  steps: number;
  tasksPerStep: number;
  seed: number;
  checkpointEvery: number;
  maxReflectionTokens: number;
  maxAnswerTokens: number;
  grpo: GrpoConfig;
  /** Which failures each step takes (stepIndices); absent in runs started before schedule 2, which resume on 1. */
  schedule?: 1 | 2;
}

/** `attempted` counts items from the start of the list: less than all of them when the pass stopped early. */
export interface FirstAttemptResult {
  attempted: number;
  correct: number;
  failures: Failure[];
}

/** A run's totals (summary.json), from its metrics. */
export interface RunSummary {
  steps: number;
  firstAttempt: { attempted: number; correct: number; accuracy: number };
  failures: number;
  /** Mean retry reward over the first and the last quarter of the steps. */
  rewardFirstQuarter: number;
  rewardLastQuarter: number;
  successAfterReflectionFirstQuarter: number;
  successAfterReflectionLastQuarter: number;
  groupsSkipped: number;
  groupsTrained: number;
  /** Steps whose update was dropped because their gradient was not finite. */
  updatesSkipped: number;
  generatedTokens: number;
  trainTokens: number;
  seconds: number;
}

/** One arm of an evaluation (base, or base + adapter) over the same items. */
export interface EvalResult {
  tasks: number;
  firstCorrect: number;
  /** Correct on the first attempt, or on the retry after one reflection. */
  secondCorrect: number;
  firstAccuracy: number;
  secondAccuracy: number;
}

/** The longest episode an item can take (episode-length.ts), checked against --ctx. */
export interface EpisodeLength {
  itemId: string;
  /** The retry conversation's tokens with an empty first answer and reflection. */
  promptTokens: number;
  /** 3 × RETOKENIZE_SLACK: the first answer, the reflection and the retry, each tokenized again. */
  slackTokens: number;
  /** promptTokens + 2 × maxAnswerTokens + maxReflectionTokens + slackTokens. */
  tokens: number;
}

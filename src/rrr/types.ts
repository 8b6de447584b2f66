// The contract of the RRR layer: what it needs from the engine (a Policy that generates and a
// Learner that takes training steps) and what it reports (metrics, summaries).
import type { Completion, GenerateOptions, GenerateRequest, StepOptions, StepResult, TrainSequence } from '../engine/types.js';
import type { ChatMessage, Task, TaskItem } from '../tasks/types.js';

/** Turns conversations into prompt tokens and samples completions (base model or base + adapter). */
export interface Policy {
  promptTokens(messages: ChatMessage[]): Int32Array;
  generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]>;
}

export interface Learner {
  step(batch: TrainSequence[], opts: StepOptions): Promise<StepResult>;
}

export type AnyTask = Task<TaskItem, any>;

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

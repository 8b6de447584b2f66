// The GRPO layer's public types: the settings the loop and the CLI pass in.
/** How a group's reward deviation is taken: over G − 1 (sample) or G (advantages.ts). */
export type StdKind = 'sample' | 'population';

export type ScheduleKind = 'cosine' | 'constant';

export interface LrSchedule {
  kind: ScheduleKind;
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Final rate as a fraction of baseLr (cosine only). */
  minLrRatio: number;
}

/** The GRPO settings of a run; defaults, and why, in config.ts. */
export interface GrpoConfig {
  groupSize: number;
  temperature: number;
  retryTemperature: number;
  clipEpsilon: number;
  beta: number;
  learningRate: number;
  lrSchedule: ScheduleKind;
  warmupSteps: number;
  minLrRatio: number;
  advantageEps: number;
  advantageStd: StdKind;
  weightDecay: number;
  maxGradNorm: number;
  passesPerBatch: number;
}

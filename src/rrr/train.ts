// The RRR training loop: each step takes a batch of failed tasks, samples G reflections per
// task, retries with each, rewards successful retries, and takes one GRPO step on the
// reflection tokens. Checkpoints every N steps and when asked to stop (Ctrl-C).
import { learningRate } from '../grpo/schedule.js';
import type { AnyTask, TaskItem } from '../tasks/types.js';
import { buildTrainBatch } from './batch.js';
import { reflectAndRetry } from './episode.js';
import { stepIndices, stepSeed } from './schedule-data.js';
import { GenerationStopped, NonFiniteGradientError } from '../engine/errors.js';
import type { StepOptions } from '../engine/types.js';
import type { Failure, Learner, LoopSettings, Policy, StepMetrics } from './types.js';

export interface LoopHooks {
  /** Called after every step with its metrics. */
  onStep?(m: StepMetrics): void;
  /** Called with generated-token counts while a step samples. */
  onTokens?(step: number, generatedTokens: number): void;
  /** Persist everything needed to resume after `stepsDone` steps. */
  checkpoint(stepsDone: number): Promise<void>;
  /** Polled between steps; true ends the loop after a checkpoint. */
  shouldStop(): boolean;
  /**
   * Aborting ends a step's generation where it is: the step is dropped (nothing of it was
   * trained; it is redone on resume, the same, as its data and seeds follow its number) and the
   * loop ends after a checkpoint of the steps before it.
   */
  signal?: AbortSignal;
  /**
   * How each GRPO step runs (how it is split in memory, whether the adapter is merged into the
   * weights in its graph), not what it trains, asked for just before the step: a budget can then
   * be read from what is free once generation has run.
   */
  stepExecution?(): Pick<StepOptions, 'memoryBudget' | 'keptLayers' | 'mergeAdapter' | 'fuseAdapter' | 'keptF16' | 'keptNorms' | 'keptSplit'>;
}

export interface LoopResult {
  stepsDone: number;
  stopped: boolean;
}

export async function runTraining(
  policy: Policy,
  learner: Learner,
  task: AnyTask,
  items: ReadonlyMap<string, TaskItem>,
  failures: Failure[],
  s: LoopSettings,
  hooks: LoopHooks,
  startStep = 0,
): Promise<LoopResult> {
  const g = s.grpo;
  for (let step = startStep; step < s.steps; step++) {
    if (hooks.shouldStop()) {
      await hooks.checkpoint(step);
      return { stepsDone: step, stopped: true };
    }
    const t0 = Date.now();
    const picked = stepIndices(failures.length, s.tasksPerStep, s.seed, step, s.schedule ?? 1).map((i) => failures[i]!);
    const batch = picked.map((f) => {
      const item = items.get(f.itemId);
      if (!item) throw new Error(`failure cache refers to unknown item ${f.itemId}`);
      return { item, failure: f };
    });
    let groups;
    try {
      groups = await reflectAndRetry(policy, task, batch, {
        groupSize: g.groupSize,
        reflectionTemperature: g.temperature,
        retryTemperature: g.retryTemperature,
        maxReflectionTokens: s.maxReflectionTokens,
        maxAnswerTokens: s.maxAnswerTokens,
        seed: stepSeed(s.seed, step),
        onProgress: (n) => hooks.onTokens?.(step, n),
        ...(hooks.signal && { signal: hooks.signal }),
      });
    } catch (e) {
      if (!(e instanceof GenerationStopped)) throw e;
      await hooks.checkpoint(step);
      return { stepsDone: step, stopped: true };
    }
    const tGen = Date.now();
    const tb = buildTrainBatch(groups, { eps: g.advantageEps, std: g.advantageStd });
    const lr = learningRate(step, {
      kind: g.lrSchedule,
      baseLr: g.learningRate,
      warmupSteps: g.warmupSteps,
      totalSteps: s.steps,
      minLrRatio: g.minLrRatio,
    });
    let res = { loss: 0, kl: 0, gradNorm: 0, meanRatio: 1, tokens: 0, ms: 0, microBatches: 0, keptLayers: 0, adapterMerged: false, computeBytes: 0 };
    let updateSkipped: string | undefined;
    if (tb.sequences.length > 0) {
      const execution = hooks.stepExecution?.() ?? {};
      for (let p = 0; p < g.passesPerBatch; p++) {
        try {
          res = await learner.step(tb.sequences, { lr, clipEps: g.clipEpsilon, beta: g.beta, ...execution });
        } catch (e) {
          // One bad batch should not end a long run: its update is dropped (the adapter is as it
          // was), the step's metrics say so, and the next batch trains.
          if (!(e instanceof NonFiniteGradientError)) throw e;
          updateSkipped = e.message;
          break;
        }
      }
    }
    const t1 = Date.now();
    const rewards = groups.flatMap((x) => x.rewards);
    const generatedTokens = groups.reduce((a, x) => a + [...x.reflections, ...x.retries].reduce((b, c) => b + c.tokens.length, 0), 0);
    const reflections = groups.flatMap((x) => x.reflections);
    const m: StepMetrics = {
      step,
      lr,
      tasks: groups.length,
      groupsTrained: tb.groupsTrained,
      groupsSkipped: tb.groupsSkipped,
      rewardMean: rewards.length ? rewards.reduce((a, b) => a + b, 0) / rewards.length : 0,
      successAfterReflection: groups.length ? groups.filter((x) => x.rewards.some((r) => r > 0)).length / groups.length : 0,
      loss: res.loss,
      kl: res.kl,
      gradNorm: res.gradNorm,
      meanRatio: res.meanRatio,
      reflectionTokensMean: reflections.length ? reflections.reduce((a, r) => a + r.tokens.length, 0) / reflections.length : 0,
      generatedTokens,
      generateTokensPerSec: generatedTokens / Math.max((tGen - t0) / 1000, 1e-3),
      trainTokens: res.tokens,
      trainTokensPerSec: res.tokens / Math.max((t1 - tGen) / 1000, 1e-3),
      microBatches: res.microBatches,
      keptLayers: res.keptLayers,
      adapterMerged: res.adapterMerged,
      trainComputeBytes: res.computeBytes,
      seconds: (t1 - t0) / 1000,
      ...(updateSkipped !== undefined && { updateSkipped }),
    };
    hooks.onStep?.(m);
    const done = step + 1;
    if (done % s.checkpointEvery === 0 || done === s.steps) await hooks.checkpoint(done);
  }
  return { stepsDone: s.steps, stopped: false };
}

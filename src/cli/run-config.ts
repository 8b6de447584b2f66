// A run's settings, as run.json keeps them so that --resume continues the same run.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { RrrError } from '../engine/errors.js';
import type { LoraTarget } from '../engine/types.js';
import { ConfigError, resolveGrpoConfig } from '../grpo/config.js';
import type { GrpoConfig } from '../grpo/types.js';
import type { LoopSettings } from '../rrr/types.js';
import type { TrainArgs } from './commands/train-flags.js';
import { DEFAULT_CTX, DEMO_SETTINGS, defaultLengths, isDemoModel } from './default-model.js';
import { integerFlag, MAX_SEQS, maxFlag, positiveFlag, seedFlag } from './flag-checks.js';
import { modelFingerprint } from './model-fingerprint.js';
import { shellArg } from './output.js';
import { itemFlags } from './task-data.js';

export const ALL_TARGETS: LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** Everything that defines a run; stored in run.json so --resume continues the same run. */
export interface RunConfig extends LoopSettings {
  version: 1;
  model: string;
  modelBytes: number;
  /** modelFingerprint of the model file when the run started; absent in runs made before it was kept. */
  modelFingerprint?: string;
  task: string;
  data?: string;
  /** sha256 of --data's bytes when the run started; absent in runs made before it was kept. */
  dataSha256?: string;
  generate?: number;
  limit?: number;
  ctx: number;
  /**
   * Tokens of the longest episode any item can take (checkContext), which sizes the generator;
   * absent in runs made before it was kept, whose generators take all of --ctx.
   */
  longestEpisode?: number;
  /** dropout: absent in runs made before --lora-dropout, which trained without it. */
  lora: { rank: number; alpha: number; targets: LoraTarget[]; dropout?: number };
}

/**
 * The flags buildConfig reads but --checkpoint-every and --ctx: what the run is, fixed in
 * run.json when it starts. How often it saves and the longest sequence it has room for are not
 * what it trains, so a resumed run may change them.
 */
export const RUN_FLAGS = [
  'model', 'task', 'data', 'generate', 'limit', 'steps', 'tasks-per-step', 'group-size', 'temperature', 'retry-temperature', 'lr', 'lr-schedule',
  'warmup-steps', 'beta', 'clip-epsilon', 'max-grad-norm', 'weight-decay', 'min-lr-ratio', 'advantage-std', 'advantage-eps', 'passes-per-batch', 'rank', 'alpha', 'lora-dropout', 'targets', 'max-reflection-tokens',
  'max-answer-tokens', 'seed',
] as const satisfies readonly (keyof TrainArgs)[];

type RunFlag = (typeof RUN_FLAGS)[number];

/** Where each run flag lands in run.json. */
const RUN_FLAG_VALUES: Record<RunFlag, (c: RunConfig) => unknown> = {
  model: (c) => c.model,
  task: (c) => c.task,
  data: (c) => c.data,
  generate: (c) => c.generate,
  limit: (c) => c.limit,
  steps: (c) => c.steps,
  'tasks-per-step': (c) => c.tasksPerStep,
  'group-size': (c) => c.grpo.groupSize,
  temperature: (c) => c.grpo.temperature,
  'retry-temperature': (c) => c.grpo.retryTemperature,
  lr: (c) => c.grpo.learningRate,
  'lr-schedule': (c) => c.grpo.lrSchedule,
  'warmup-steps': (c) => c.grpo.warmupSteps,
  beta: (c) => c.grpo.beta,
  'clip-epsilon': (c) => c.grpo.clipEpsilon,
  'max-grad-norm': (c) => c.grpo.maxGradNorm,
  'weight-decay': (c) => c.grpo.weightDecay,
  'min-lr-ratio': (c) => c.grpo.minLrRatio,
  'advantage-std': (c) => c.grpo.advantageStd,
  'advantage-eps': (c) => c.grpo.advantageEps,
  'passes-per-batch': (c) => c.grpo.passesPerBatch,
  rank: (c) => c.lora.rank,
  alpha: (c) => c.lora.alpha,
  'lora-dropout': (c) => c.lora.dropout ?? 0,
  targets: (c) => c.lora.targets.join(','),
  'max-reflection-tokens': (c) => c.maxReflectionTokens,
  'max-answer-tokens': (c) => c.maxAnswerTokens,
  seed: (c) => c.seed,
};

/**
 * The first run flag given to a resumed run with another value than its run.json's, and that
 * value; undefined where every one given repeats the run's own (the command that started the
 * run, given again with --resume, goes on).
 */
export function changedRunFlag(a: TrainArgs, cfg: RunConfig): { flag: RunFlag; was: unknown } | undefined {
  const given = RUN_FLAGS.filter((f) => a[f] !== undefined);
  if (given.length === 0) return undefined;
  // The run's own steps for the checks between flags (--warmup-steps against --steps).
  const again = buildConfig({ ...a, steps: a.steps ?? cfg.steps }, a.model === undefined ? cfg.model : resolve(a.model));
  const text = (v: unknown) => JSON.stringify(v);
  const flag = given.find((f) => text(RUN_FLAG_VALUES[f](again)) !== text(RUN_FLAG_VALUES[f](cfg)));
  return flag && { flag, was: RUN_FLAG_VALUES[flag](cfg) };
}

/** A run folder's run.json, refused in one line when it is not one this command wrote. */
export function readRunConfig(path: string): RunConfig {
  let cfg: Partial<RunConfig>;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8')) as Partial<RunConfig>;
  } catch (e) {
    throw new RrrError(`${path}: not a run's settings (${(e as Error).message})`);
  }
  if (typeof cfg !== 'object' || cfg === null) throw new RrrError(`${path}: not a run's settings (a JSON ${cfg === null ? 'null' : typeof cfg})`);
  const bad = (['model', 'task'] as const).find((k) => typeof cfg[k] !== 'string') ?? (['steps', 'modelBytes', 'ctx'] as const).find((k) => typeof cfg[k] !== 'number');
  if (cfg.version !== 1 || bad || typeof cfg.lora !== 'object' || typeof cfg.grpo !== 'object') {
    throw new RrrError(`${path}: not a run's settings (${cfg.version !== 1 ? `version ${String(cfg.version)}, expected 1` : `no ${bad ?? 'lora or grpo'}`})`);
  }
  // What a resumed run reads from it, checked as the flags were when it started: an edited or
  // damaged file is named here, not met as a NaN or a crash steps later.
  const field = (name: string, problem: string | undefined) => {
    if (problem) throw new RrrError(`${path}: ${name} ${problem}`);
  };
  const whole = (v: unknown, min: number) => (Number.isSafeInteger(v) && (v as number) >= min ? undefined : `must be a whole number ≥ ${min} (got ${JSON.stringify(v)})`);
  for (const k of ['steps', 'tasksPerStep', 'checkpointEvery', 'maxReflectionTokens', 'maxAnswerTokens', 'ctx'] as const) field(k, whole(cfg[k], 1));
  // --seed takes negative numbers too (seedFlag).
  field('seed', Number.isSafeInteger(cfg.seed) ? undefined : `must be a whole number (got ${JSON.stringify(cfg.seed)})`);
  const lora = (cfg.lora ?? {}) as Partial<RunConfig['lora']>;
  field('lora.rank', whole(lora.rank, 1));
  field('lora.alpha', typeof lora.alpha === 'number' && lora.alpha > 0 ? undefined : `must be a number > 0 (got ${JSON.stringify(lora.alpha)})`);
  field('lora.targets', Array.isArray(lora.targets) && lora.targets.length > 0 && lora.targets.every((t) => ALL_TARGETS.includes(t)) ? undefined : `must list projections of ${ALL_TARGETS.join(',')} (got ${JSON.stringify(lora.targets)})`);
  field('lora.dropout', lora.dropout === undefined || (typeof lora.dropout === 'number' && lora.dropout >= 0 && lora.dropout < 1) ? undefined : `must be a number in [0, 1) (got ${JSON.stringify(lora.dropout)})`);
  try {
    cfg.grpo = resolveGrpoConfig(cfg.grpo as unknown as Record<string, unknown>);
  } catch (e) {
    if (e instanceof ConfigError) throw new RrrError(`${path}: grpo, as ${e.message}`);
    throw e;
  }
  return cfg as RunConfig;
}

function parseTargets(s: string): LoraTarget[] {
  if (s.trim() === '') throw new RrrError('--targets: at least one projection is needed');
  const list = s.split(',').map((x) => x.trim());
  for (const t of list) {
    if (!ALL_TARGETS.includes(t as LoraTarget)) {
      throw new RrrError(`--targets: ${t ? `unknown projection '${t}'` : `an empty name in '${s}'`} (expected a comma list of ${ALL_TARGETS.join(',')})`);
    }
  }
  return list as LoraTarget[];
}

function modelSize(path: string): number {
  if (!existsSync(path)) throw new RrrError(`${path}: no such file`);
  return statSync(path).size;
}

export function buildConfig(a: TrainArgs, model: string): RunConfig {
  itemFlags(a);
  const demo = isDemoModel(model);
  const lengths = defaultLengths(model);
  const rank = integerFlag('--rank', a.rank ?? 16);
  let grpo: GrpoConfig;
  try {
    grpo = resolveGrpoConfig({
      groupSize: a['group-size'],
      temperature: a.temperature,
      retryTemperature: a['retry-temperature'],
      learningRate: a.lr ?? (demo ? DEMO_SETTINGS.lr : undefined),
      lrSchedule: a['lr-schedule'] ?? (demo ? DEMO_SETTINGS.lrSchedule : undefined),
      warmupSteps: a['warmup-steps'],
      beta: a.beta,
      clipEpsilon: a['clip-epsilon'],
      maxGradNorm: a['max-grad-norm'],
      weightDecay: a['weight-decay'],
      minLrRatio: a['min-lr-ratio'],
      advantageStd: a['advantage-std'],
      advantageEps: a['advantage-eps'],
      passesPerBatch: a['passes-per-batch'],
    });
  } catch (e) {
    if (e instanceof ConfigError) throw new RrrError(e.message);
    throw e;
  }
  const steps = integerFlag('--steps', a.steps ?? (demo ? DEMO_SETTINGS.steps : 100));
  const tasksPerStep = integerFlag('--tasks-per-step', a['tasks-per-step'] ?? (demo ? DEMO_SETTINGS.tasksPerStep : 4));
  maxFlag('--tasks-per-step x --group-size', tasksPerStep * grpo.groupSize, MAX_SEQS);
  // The schedule itself refuses this, but only when the first step asks for its rate: after the
  // first attempts, which can take hours.
  if (grpo.warmupSteps > steps) throw new RrrError(`--warmup-steps ${grpo.warmupSteps}: must be at most --steps (${steps})`);
  return {
    version: 1,
    model,
    modelBytes: modelSize(model),
    modelFingerprint: modelFingerprint(model),
    task: a.task ?? 'synthetic',
    ...(a.data !== undefined && { data: resolve(a.data) }),
    ...(a.generate !== undefined && { generate: a.generate }),
    ...(a.limit !== undefined && { limit: a.limit }),
    steps,
    tasksPerStep,
    seed: seedFlag(a.seed ?? 1),
    checkpointEvery: integerFlag('--checkpoint-every', a['checkpoint-every'] ?? 10),
    // The embedded tiny model is a toy: short outputs keep the demo to half a minute.
    maxReflectionTokens: integerFlag('--max-reflection-tokens', a['max-reflection-tokens'] ?? lengths.maxReflectionTokens),
    maxAnswerTokens: integerFlag('--max-answer-tokens', a['max-answer-tokens'] ?? lengths.maxAnswerTokens),
    ctx: integerFlag('--ctx', a.ctx ?? DEFAULT_CTX, 16),
    schedule: 2,
    lora: { rank, alpha: a.alpha === undefined ? 2 * rank : positiveFlag('--alpha', a.alpha), targets: parseTargets(a.targets ?? ALL_TARGETS.join(',')), dropout: loraDropout(a['lora-dropout'] ?? 0) },
    grpo,
  };
}

/** The eval command for a run's adapter, with the lengths the run trained on where eval's defaults differ. */
export function evalCommand(cfg: RunConfig, adapter: string): string {
  const lengths = defaultLengths(cfg.model);
  const flags = [...(isDemoModel(cfg.model) ? [] : [`--model ${shellArg(cfg.model)}`]), `--adapter ${shellArg(adapter)}`, `--task ${cfg.task}`, cfg.data ? '--data <held-out.jsonl>' : `--seed ${cfg.seed + 1000}`];
  if (cfg.maxReflectionTokens !== lengths.maxReflectionTokens) flags.push(`--max-reflection-tokens ${cfg.maxReflectionTokens}`);
  if (cfg.maxAnswerTokens !== lengths.maxAnswerTokens) flags.push(`--max-answer-tokens ${cfg.maxAnswerTokens}`);
  if (cfg.ctx !== DEFAULT_CTX) flags.push(`--ctx ${cfg.ctx}`);
  return `rrr-native eval ${flags.join(' ')}`;
}


function loraDropout(p: number): number {
  if (!(Number.isFinite(p) && p >= 0 && p < 1)) throw new RrrError(`--lora-dropout: expected a number in [0, 1), got ${p}`);
  return p;
}

/** Names the first attempts a run's failures.json holds: the same model, items and answer length. */
export function failureKey(c: RunConfig, dataDigest: string | undefined): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([c.model, c.modelBytes, c.task, c.data, c.generate, c.limit, c.seed, c.maxAnswerTokens]));
  if (c.data) {
    if (dataDigest === undefined) throw new Error(`internal error: no digest of ${c.data}`);
    h.update(dataDigest);
  }
  return h.digest('hex');
}

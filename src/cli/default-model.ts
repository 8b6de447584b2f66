// The embedded default model: a tiny qwen2 model with a real tokenizer, generated once into the
// user's cache folder so `rrr-native train` runs with no arguments and no download. Its weights
// are random except for a hand-set copy circuit (copy_init.h): it predicts the token 13
// positions back, which is where the last word of the reflection sits when the synthetic task's
// retry prompt ("Try again.") and the Qwen2 chat template follow it. So its retry repeats the
// reflection's last word, and training the reflection is what can make the retry right. The
// low output gain keeps sampling diverse (about half the draws copy, half are random).
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { makeTinyModel } from '../engine/tiny-model.js';

/** Also used by the learning test, so the test proves what the default run shows. */
export const DEFAULT_MODEL_SPEC = { arch: 'qwen2', seed: 42, nHeadKv: 4, init: 'copy', copyOffset: 13, outputGain: 0.22 } as const;

/** Settings of the no-argument demo run (train) and its evaluation (eval), tuned for the model above. */
export const DEMO_SETTINGS = { steps: 60, tasksPerStep: 8, lr: 5e-3, lrSchedule: 'constant', maxReflectionTokens: 2, maxAnswerTokens: 10 } as const;

/** --ctx of train and eval when not given (or the model's context if shorter). */
export const DEFAULT_CTX = 2048;

/** Lengths of reflections and answers that train and eval default to, for a model given by path (or none). */
export function defaultLengths(model: string | undefined): { maxReflectionTokens: number; maxAnswerTokens: number } {
  return isDemoModel(model) ? { maxReflectionTokens: DEMO_SETTINGS.maxReflectionTokens, maxAnswerTokens: DEMO_SETTINGS.maxAnswerTokens } : { maxReflectionTokens: 128, maxAnswerTokens: 256 };
}

/** rrr-native's folder in the user's cache (XDG_CACHE_HOME, else ~/.cache). */
export function cacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'rrr-native');
}

export function defaultModelPath(): string {
  return join(cacheDir(), 'default-qwen2-tiny-copy-v2.gguf');
}

/**
 * Whether a run uses the embedded model: no --model, or --model naming its file (as train's
 * "evaluate it" line once did). Either way it gets the demo's settings, which suit no other model.
 */
export function isDemoModel(model: string | undefined): boolean {
  return model === undefined || resolve(model) === defaultModelPath();
}

export async function ensureDefaultModel(log: (line: string) => void): Promise<string> {
  const path = defaultModelPath();
  if (!existsSync(path)) {
    log(`generating the embedded default model (tiny qwen2 copier, real Qwen2 tokenizer) at ${path}`);
    mkdirSync(dirname(path), { recursive: true });
    await makeTinyModel({ ...DEFAULT_MODEL_SPEC, out: path });
  }
  return path;
}

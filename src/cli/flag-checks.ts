// Checks of flag values that several commands share, each failing in one line that names the flag.
import { existsSync, statSync } from 'node:fs';
import { RrrError } from '../engine/errors.js';
import type { EpisodeLength } from '../rrr/types.js';

/** `v` as given for `flag` (e.g. '--steps'), which must be a whole number of at least `min`. */
export function integerFlag(flag: string, v: number, min = 1): number {
  if (!Number.isInteger(v) || v < min) throw new RrrError(`${flag}: expected a whole number ≥ ${min}, got ${v}`);
  return v;
}

/** --out of a command that writes one file: a folder there would only fail at the final rename. */
export function outFileFlag(out: string): string {
  if (existsSync(out) && statSync(out).isDirectory()) throw new RrrError(`--out ${out}: is a folder (expected the path of the .gguf file to write)`);
  return out;
}

/** --threads: a whole number; 0, as bench's default, or none means all cores (undefined). */
export function threadsFlag(v: number | undefined): number | undefined {
  return v === undefined || maxFlag('--threads', integerFlag('--threads', v, 0), MAX_THREADS) === 0 ? undefined : v;
}

/** Threads past this are a typo (the addon keeps an int: 1e12 wrapped round to all cores). */
export const MAX_THREADS = 4096;

/**
 * Most sequences one generator holds at once (train: --tasks-per-step x --group-size, eval:
 * --batch-size, bench: --parallel, --retry-tasks x --retry-group): the addon counts them in 32
 * bits, and each takes a KV stream.
 */
export const MAX_SEQS = 65536;

/** `v`, refused in one line naming `what` where it is above `max`. */
export function maxFlag(what: string, v: number, max: number): number {
  if (v > max) throw new RrrError(`${what}: at most ${max}, got ${v}`);
  return v;
}

/** --seed: any whole number, negative ones too (the generators hash it). */
export function seedFlag(v: number): number {
  if (!Number.isSafeInteger(v)) throw new RrrError(`--seed: expected a whole number, got ${v}`);
  return v;
}

/** `v` as given for `flag`, which must be a finite number above 0. */
export function positiveFlag(flag: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new RrrError(`${flag}: expected a number > 0, got ${v}`);
  return v;
}

/** `v` as given for `flag`, which must be a finite number of at least 0. */
export function nonNegativeFlag(flag: string, v: number): number {
  if (!(Number.isFinite(v) && v >= 0)) throw new RrrError(`${flag}: expected a number ≥ 0, got ${v}`);
  return v;
}

/** Layers to keep (--kept-layers, --train-kept-layers), once the model says how many it has. */
export function keptLayersFlag(flag: string, kept: number | 'auto' | undefined, nLayer: number): void {
  if (typeof kept === 'number' && kept > nLayer) throw new RrrError(`${flag} ${kept}: the model has ${nLayer} layers`);
}

/**
 * --ctx against the longest episode (rrr/episode-length.ts), where the context is --ctx or the
 * model's own if shorter (`modelCtx`): refused in one line that says what fills it.
 */
export function contextFlag(ctx: number, modelCtx: number, e: EpisodeLength, s: { maxAnswerTokens: number; maxReflectionTokens: number }): void {
  const limit = Math.min(ctx, modelCtx);
  if (e.tokens <= limit) return;
  const parts = `prompts ${e.promptTokens}, the first answer and the retry ${s.maxAnswerTokens} each (--max-answer-tokens), the reflection ${s.maxReflectionTokens} (--max-reflection-tokens), ${e.slackTokens} for their text tokenized again`;
  const fix = e.tokens <= modelCtx ? 'raise --ctx or lower those' : `lower those: the model's context is ${modelCtx} tokens`;
  throw new RrrError(`--ctx ${ctx}: an episode of item ${e.itemId} can take ${e.tokens} tokens (${parts}); ${fix}`);
}

/** A memory budget in GiB: positive, and not so small that it is no byte at all (1e-320 floored to 0, which means no budget). */
export function memoryGibFlag(flag: string, gib: number): number {
  positiveFlag(flag, gib);
  if (Math.floor(gib * 2 ** 30) < 1) throw new RrrError(`${flag}: ${gib} GiB is less than a byte`);
  return gib;
}

/**
 * The bytes of a --train-memory-gib. The addon takes a size_t, which a double past 2^64 does not
 * fit (1e12 GiB came out as no budget at all); a budget past 2^53 bytes is as good as none.
 */
export function budgetBytes(gib: number): number {
  return Math.min(Math.floor(gib * 2 ** 30), Number.MAX_SAFE_INTEGER);
}

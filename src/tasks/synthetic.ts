/**
 * Synthetic "letters" task, made for tiny random models: the embedded default of `train` and
 * the learning test. Each item lists some letters; an answer is correct when its first Latin
 * letter (case-insensitive) is one of them. A random model hits this by chance at a moderate
 * rate, so first attempts fail often but not always, and which retry succeeds depends on
 * what came before it: there is signal for GRPO without any knowledge of language.
 *
 * Dataset format (JSONL): {"letters": "aeiou"} with an optional "id".
 */
import { InvalidRecord, expectObject, readJsonl, recordId } from './jsonl.js';
import { Rng } from '../util/rng.js';
import type { ChatMessage, LoadOptions, LoadResult, Task, VerifyResult } from './types.js';

export interface SyntheticItem {
  id: string;
  /** Distinct lowercase letters, sorted. */
  letters: string;
}

export interface SyntheticGenOptions {
  /** Letters per item (default 8 of 26). */
  size?: number;
}

export const SYNTHETIC_REFLECTION_PROMPT =
  'You tried answering and your word started with the wrong letter. ' +
  'Reflect on what went wrong and write a short explanation that will help you do better next time.';

function toItem(value: unknown, line: number): SyntheticItem {
  const o = expectObject(value);
  const letters = o['letters'];
  if (typeof letters !== 'string' || !/^[a-zA-Z]{1,26}$/.test(letters)) {
    throw new InvalidRecord('expected "letters" to be a string of 1 to 26 Latin letters');
  }
  const set = [...new Set(letters.toLowerCase())].sort().join('');
  return { id: recordId(o, line), letters: set };
}

export function verifySynthetic(item: SyntheticItem, answer: string): VerifyResult {
  const m = /[a-z]/i.exec(answer);
  if (!m) return { ok: false, reason: 'no Latin letter in the answer' };
  const c = m[0].toLowerCase();
  return item.letters.includes(c) ? { ok: true, reason: `starts with '${c}'` } : { ok: false, reason: `'${c}' is not one of ${item.letters}` };
}

export function generateSynthetic(n: number, seed: number, opts: SyntheticGenOptions = {}): SyntheticItem[] {
  const size = opts.size ?? 8;
  if (!Number.isInteger(size) || size < 1 || size > 26) throw new RangeError(`letters per item must be 1..26 (got ${size})`);
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, k) => {
    const letters = rng.shuffle('abcdefghijklmnopqrstuvwxyz'.split('')).slice(0, size).sort().join('');
    return { id: `synthetic-${seed}-${k}`, letters };
  });
}

export const syntheticTask: Task<SyntheticItem, SyntheticGenOptions> = {
  name: 'synthetic',
  reflectionPrompt: SYNTHETIC_REFLECTION_PROMPT,
  retryPrompt: 'Try again.',
  buildPrompt(item: SyntheticItem): ChatMessage[] {
    return [{ role: 'user', content: `Reply with one word that starts with one of these letters: ${item.letters.split('').join(', ')}.` }];
  },
  verify: verifySynthetic,
  load(path: string, opts: LoadOptions = {}): Promise<LoadResult<SyntheticItem>> {
    return readJsonl(path, toItem, opts);
  },
  generate: generateSynthetic,
};

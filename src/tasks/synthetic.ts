/**
 * Synthetic "secret word" task, made for tiny models: the embedded default of `train` and the
 * learning test. Each item offers four words (by default); one of them, the same for the whole dataset, is
 * the secret. An answer is correct when its first word is the secret. Nothing in the prompt
 * says which word it is: the model can only learn it from rewards, which makes progress easy
 * to see and impossible to get from anything but training.
 *
 * Dataset format (JSONL): {"options": ["apple", ...], "secret": "river"} with an optional "id";
 * the secret must be one of the options.
 *
 * The embedded default model (see cli/default-model.ts) is an in-context copier whose retry
 * repeats the last word of its reflection, so the reflection alone decides the retry: exactly
 * the link RRR trains.
 */
import { InvalidRecord, expectObject, readJsonl, recordId } from './jsonl.js';
import { Rng } from '../util/rng.js';
import type { ChatMessage, LoadOptions, LoadResult, Task, VerifyResult } from './types.js';

export interface SyntheticItem {
  id: string;
  options: string[];
  secret: string;
}

export interface SyntheticGenOptions {
  /** Words offered per item (default 4). */
  size?: number;
  /** The secret (default SYNTHETIC_SECRET): fixed across seeds, so held-out items share it. */
  secret?: string;
}

/** Common words that are one token each in the Qwen2 and Llama 3 vocabularies (with a leading space). */
export const SYNTHETIC_WORDS = [
  'apple', 'river', 'stone', 'cloud', 'horse', 'bread', 'light', 'green', 'table', 'music', 'water', 'house',
  'paper', 'glass', 'night', 'smile', 'chair', 'dream', 'field', 'money', 'plant', 'sugar', 'tiger', 'train',
];

export const SYNTHETIC_SECRET = 'river';

export const SYNTHETIC_REFLECTION_PROMPT = 'Reflect.';
export const SYNTHETIC_RETRY_PROMPT = 'Try again.';

function toItem(value: unknown, line: number, nth?: number): SyntheticItem {
  const o = expectObject(value);
  const options = o['options'];
  const secret = o['secret'];
  if (!Array.isArray(options) || options.length < 2 || !options.every((w): w is string => typeof w === 'string' && /^[a-z]+$/i.test(w))) {
    throw new InvalidRecord('expected "options" to be an array of at least 2 single words');
  }
  if (typeof secret !== 'string' || !options.includes(secret)) throw new InvalidRecord('expected "secret" to be one of "options"');
  return { id: recordId(o, line, nth), options, secret: secret.toLowerCase() };
}

/** The first word of the answer (letters only, case-insensitive) must be the secret. */
export function verifySynthetic(item: SyntheticItem, answer: string): VerifyResult {
  const m = /[a-z]+/i.exec(answer);
  if (!m) return { ok: false, reason: 'no word in the answer' };
  const w = m[0].toLowerCase();
  return w === item.secret ? { ok: true, reason: `answered '${w}'` } : { ok: false, reason: `answered '${w}', not the secret` };
}

export function generateSynthetic(n: number, seed: number, opts: SyntheticGenOptions = {}): SyntheticItem[] {
  const size = opts.size ?? 4;
  if (!Number.isInteger(size) || size < 2 || size > SYNTHETIC_WORDS.length) {
    throw new RangeError(`options per item must be 2..${SYNTHETIC_WORDS.length} (got ${size})`);
  }
  const secret = opts.secret ?? SYNTHETIC_SECRET;
  if (!SYNTHETIC_WORDS.includes(secret)) throw new RangeError(`secret must be one of ${SYNTHETIC_WORDS.join(', ')}`);
  const rng = new Rng(seed);
  const others = SYNTHETIC_WORDS.filter((w) => w !== secret);
  return Array.from({ length: n }, (_, k) => {
    const options = rng.shuffle([secret, ...rng.shuffle([...others]).slice(0, size - 1)]);
    return { id: `synthetic-${seed}-${k}`, options, secret };
  });
}

export const syntheticTask: Task<SyntheticItem, SyntheticGenOptions> = {
  name: 'synthetic',
  reflectionPrompt: SYNTHETIC_REFLECTION_PROMPT,
  retryPrompt: SYNTHETIC_RETRY_PROMPT,
  buildPrompt(item: SyntheticItem): ChatMessage[] {
    return [{ role: 'user', content: `Pick the secret word from: ${item.options.join(' ')}` }];
  },
  verify: verifySynthetic,
  load(path: string, opts: LoadOptions = {}): Promise<LoadResult<SyntheticItem>> {
    return readJsonl(path, toItem, opts);
  },
  generate: generateSynthetic,
};

// Step 1 of RRR: first attempts over the dataset, keeping the failures. The result is cached,
// keyed by everything that determines it, in the run folder (for --resume) and in the user's
// cache (cli/shared-first-attempts.ts, for a new run over the same model and items).
import { existsSync, readFileSync } from 'node:fs';
import { GenerationStopped } from '../engine/errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { AnyTask, TaskItem } from '../tasks/types.js';
import type { Failure, FirstAttemptResult, Policy } from './types.js';

export interface FirstAttemptSettings {
  maxAnswerTokens: number;
  /** Prompts per generate call; bounds KV-cache memory. */
  batchSize: number;
  onProgress?: (done: number) => void;
  /** Tokens generated so far in the current batch, as they come: a batch can take minutes. */
  onTokens?: (n: number) => void;
  /** Asked between batches: true ends the pass there, with the batches done so far. */
  shouldStop?: () => boolean;
  /** Aborting ends the batch in progress: the pass ends with the batches done before it. */
  signal?: AbortSignal;
  /** Told the result so far after each batch, so a long pass can be saved as it goes. */
  onBatch?: (soFar: FirstAttemptResult) => void;
}

/**
 * First attempts over `items`, going on after `from` (a pass that stopped early, over the same
 * items in the same batches, so it ends as one pass would have).
 */
export async function firstAttempts(policy: Policy, task: AnyTask, items: TaskItem[], s: FirstAttemptSettings, from?: FirstAttemptResult): Promise<FirstAttemptResult> {
  const failures: Failure[] = [...(from?.failures ?? [])];
  let correct = from?.correct ?? 0;
  let i = from?.attempted ?? 0;
  if (i % s.batchSize !== 0 && i !== items.length) throw new Error(`firstAttempts: ${i} attempted is not a whole number of batches of ${s.batchSize}`);
  while (i < items.length && !s.shouldStop?.()) {
    const chunk = items.slice(i, i + s.batchSize);
    let out;
    try {
      out = await policy.generate(
        chunk.map((item) => ({ prompt: policy.promptTokens(task.buildPrompt(item)) })),
        { maxTokens: s.maxAnswerTokens, temperature: 0, ...(s.onTokens && { onProgress: s.onTokens }), ...(s.signal && { signal: s.signal }) },
      );
    } catch (e) {
      if (e instanceof GenerationStopped) break;
      throw e;
    }
    chunk.forEach((item, j) => {
      const answer = out[j]![0]!.text;
      const v = task.verify(item, answer);
      if (v.ok) correct++;
      else failures.push({ itemId: item.id, firstAnswer: answer, reason: v.reason });
    });
    i += chunk.length;
    s.onProgress?.(i);
    s.onBatch?.({ attempted: i, correct, failures });
  }
  return { attempted: i, correct, failures };
}

interface CacheFile {
  version: 1;
  key: string;
  result: FirstAttemptResult;
}

/**
 * The cached result when `key` matches, else undefined (a stale cache is simply redone); it may
 * be a pass that stopped early. A file edited or damaged past its key (failures of items not in
 * `itemIds`, counts that do not add up) is redone too: the steps would fail on it, or train on
 * what no first attempt said.
 */
export function readFailureCache(path: string, key: string, itemIds: ReadonlySet<string>): FirstAttemptResult | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const c = JSON.parse(readFileSync(path, 'utf8')) as CacheFile;
    return c.version === 1 && c.key === key && wellFormed(c.result, itemIds) ? c.result : undefined;
  } catch {
    return undefined;
  }
}

function wellFormed(r: unknown, itemIds: ReadonlySet<string>): r is FirstAttemptResult {
  if (typeof r !== 'object' || r === null) return false;
  const { attempted, correct, failures } = r as Partial<FirstAttemptResult>;
  const count = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
  if (!count(attempted) || !count(correct) || attempted > itemIds.size || !Array.isArray(failures) || correct + failures.length !== attempted) return false;
  const text = (x: unknown) => typeof x === 'string';
  const ids = new Set<string>();
  for (const f of failures as unknown[]) {
    const { itemId, firstAnswer, reason } = (f ?? {}) as Partial<Failure>;
    if (!text(itemId) || !text(firstAnswer) || !text(reason) || !itemIds.has(itemId!) || ids.has(itemId!)) return false;
    ids.add(itemId!);
  }
  return true;
}

export function writeFailureCache(path: string, key: string, result: FirstAttemptResult): void {
  const c: CacheFile = { version: 1, key, result };
  writeFileAtomic(path, JSON.stringify(c));
}

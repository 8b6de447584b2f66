// Step 1 of RRR: first attempts over the dataset, keeping the failures. The result is cached
// in the run folder, keyed by everything that determines it, so a second run skips the work.
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic.js';
import type { TaskItem } from '../tasks/types.js';
import type { AnyTask, Failure, Policy } from './types.js';

export interface FirstAttemptSettings {
  maxAnswerTokens: number;
  /** Prompts per generate call; bounds KV-cache memory. */
  batchSize: number;
  onProgress?: (done: number) => void;
}

export interface FirstAttemptResult {
  attempted: number;
  correct: number;
  failures: Failure[];
}

export async function firstAttempts(policy: Policy, task: AnyTask, items: TaskItem[], s: FirstAttemptSettings): Promise<FirstAttemptResult> {
  const failures: Failure[] = [];
  let correct = 0;
  for (let i = 0; i < items.length; i += s.batchSize) {
    const chunk = items.slice(i, i + s.batchSize);
    const out = await policy.generate(
      chunk.map((item) => ({ prompt: policy.promptTokens(task.buildPrompt(item)) })),
      { maxTokens: s.maxAnswerTokens, temperature: 0 },
    );
    chunk.forEach((item, j) => {
      const answer = out[j]![0]!.text;
      const v = task.verify(item, answer);
      if (v.ok) correct++;
      else failures.push({ itemId: item.id, firstAnswer: answer, reason: v.reason });
    });
    s.onProgress?.(Math.min(i + s.batchSize, items.length));
  }
  return { attempted: items.length, correct, failures };
}

interface CacheFile {
  version: 1;
  key: string;
  result: FirstAttemptResult;
}

/** The cached result when `key` matches, else undefined (a stale cache is simply redone). */
export function readFailureCache(path: string, key: string): FirstAttemptResult | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const c = JSON.parse(readFileSync(path, 'utf8')) as CacheFile;
    return c.version === 1 && c.key === key ? c.result : undefined;
  } catch {
    return undefined;
  }
}

export function writeFailureCache(path: string, key: string, result: FirstAttemptResult): void {
  const c: CacheFile = { version: 1, key, result };
  writeFileAtomic(path, JSON.stringify(c));
}

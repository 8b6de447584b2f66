// Prompts that start alike go to the generator as one request: the common start, prefilled
// once, and each prompt's own rest. RRR's G retries of one task all repeat its reflection
// prompt and differ only from the reflection on, so this spares most of their prefill.
import type { GenerateRequest } from '../engine/types.js';

/**
 * One request whose sample j reads prompts[j] when the prompts share a start (every prompt keeps
 * at least one token of its own), else one request per prompt. Either way the completions, in
 * order, answer prompts[0], prompts[1], ...
 */
export function sharedStartRequests(prompts: Int32Array[]): GenerateRequest[] {
  const alone = () => prompts.map((prompt) => ({ prompt }));
  if (prompts.length < 2) return alone();
  const first = prompts[0]!;
  let n = Math.min(...prompts.map((p) => p.length)) - 1;
  for (const p of prompts) {
    let i = 0;
    while (i < n && p[i] === first[i]) i++;
    n = i;
  }
  if (n < 1) return alone();
  return [{ prompt: first.slice(0, n), suffixes: prompts.map((p) => p.slice(n)) }];
}

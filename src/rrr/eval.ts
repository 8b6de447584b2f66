// `eval`: first-attempt accuracy, and second-attempt accuracy after one reflection, on
// held-out tasks. Everything is greedy so a rerun gives the same table.
import { buildReflectConversation, buildRetryConversation } from '../tasks/conversation.js';
import type { AnyTask, TaskItem } from '../tasks/types.js';
import { GenerationStopped } from '../engine/errors.js';
import type { GenerateRequest } from '../engine/types.js';
import type { EvalResult, Policy } from './types.js';

export interface EvalSettings {
  maxAnswerTokens: number;
  maxReflectionTokens: number;
  batchSize: number;
  onProgress?: (done: number, total: number) => void;
  /** Tokens generated so far in the current batch (every arm, every attempt), as they come. */
  onTokens?: (n: number) => void;
  /** Asked between batches: true ends the evaluation there, over the items done so far. */
  shouldStop?: () => boolean;
  /** Aborting ends the batch in progress: the results are those of the batches done before it. */
  signal?: AbortSignal;
}

/** One model under evaluation: `use()` makes the policy answer as it (the base, or base + adapter). */
export interface EvalArm {
  use(): void;
}

/**
 * Each arm's results over the same items, batch by batch: an evaluation stopped early compares
 * them over the items done (`tasks`), and each batch is what a whole pass would have given it.
 */
export async function evaluate(policy: Policy, task: AnyTask, items: TaskItem[], arms: EvalArm[], s: EvalSettings): Promise<EvalResult[]> {
  const counts = arms.map(() => ({ first: 0, second: 0 }));
  let done = 0;
  while (done < items.length && !s.shouldStop?.()) {
    const chunk = items.slice(done, done + s.batchSize);
    let before = 0; // tokens of this batch's generate calls that have returned
    const running = s.onTokens && ((n: number) => s.onTokens!(before + n));
    const batch = [];
    try {
      for (const arm of arms) {
        arm.use();
        batch.push(await evaluateBatch(policy, task, chunk, s, running, (n) => (before += n)));
      }
    } catch (e) {
      if (e instanceof GenerationStopped) break;
      throw e;
    }
    // Counted once every arm has answered the batch, so all arms cover the same items.
    batch.forEach((r, k) => {
      counts[k]!.first += r.first;
      counts[k]!.second += r.second;
    });
    done += chunk.length;
    s.onProgress?.(done, items.length);
  }
  return counts.map(({ first, second }) => ({
    tasks: done,
    firstCorrect: first,
    secondCorrect: second,
    firstAccuracy: done ? first / done : 0,
    secondAccuracy: done ? second / done : 0,
  }));
}

/**
 * One arm over one batch. `onTokens` hears each generate call's running count; `ended` each
 * call's total once it returns, so the caller can add them up across calls.
 */
async function evaluateBatch(
  policy: Policy,
  task: AnyTask,
  chunk: TaskItem[],
  s: EvalSettings,
  onTokens: ((n: number) => void) | undefined,
  ended: (n: number) => void,
): Promise<{ first: number; second: number }> {
  const generate = async (requests: GenerateRequest[], maxTokens: number) => {
    const out = await policy.generate(requests, { maxTokens, temperature: 0, ...(onTokens && { onProgress: onTokens }), ...(s.signal && { signal: s.signal }) });
    ended(out.reduce((t, c) => t + c[0]!.tokens.length, 0));
    return out;
  };
  let first = 0;
  let second = 0;
  const prompts = chunk.map((it) => task.buildPrompt(it));
  const answers = (await generate(prompts.map((p) => ({ prompt: policy.promptTokens(p) })), s.maxAnswerTokens)).map((c) => c[0]!.text);
  const failed: number[] = [];
  chunk.forEach((it, j) => (task.verify(it, answers[j]!).ok ? first++ : failed.push(j)));
  second += chunk.length - failed.length;
  if (failed.length) {
    const reflections = await generate(
      failed.map((j) => ({ prompt: policy.promptTokens(buildReflectConversation(prompts[j]!, answers[j]!, task.reflectionPrompt)) })),
      s.maxReflectionTokens,
    );
    const retries = await generate(
      failed.map((j, k) => ({
        prompt: policy.promptTokens(
          buildRetryConversation(prompts[j]!, answers[j]!, task.reflectionPrompt, reflections[k]![0]!.text, task.retryPrompt),
        ),
      })),
      s.maxAnswerTokens,
    );
    failed.forEach((j, k) => {
      if (task.verify(chunk[j]!, retries[k]![0]!.text).ok) second++;
    });
  }
  return { first, second };
}

// `eval`: first-attempt accuracy, and second-attempt accuracy after one reflection, on
// held-out tasks. Everything is greedy so a rerun gives the same table.
import { buildReflectConversation, buildRetryConversation } from '../tasks/conversation.js';
import type { TaskItem } from '../tasks/types.js';
import type { AnyTask, Policy } from './types.js';

export interface EvalSettings {
  maxAnswerTokens: number;
  maxReflectionTokens: number;
  batchSize: number;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  tasks: number;
  firstCorrect: number;
  /** Correct on the first attempt, or on the retry after one reflection. */
  secondCorrect: number;
  firstAccuracy: number;
  secondAccuracy: number;
}

export async function evaluate(policy: Policy, task: AnyTask, items: TaskItem[], s: EvalSettings): Promise<EvalResult> {
  let first = 0;
  let second = 0;
  for (let i = 0; i < items.length; i += s.batchSize) {
    const chunk = items.slice(i, i + s.batchSize);
    const prompts = chunk.map((it) => task.buildPrompt(it));
    const answers = (await policy.generate(prompts.map((p) => ({ prompt: policy.promptTokens(p) })), { maxTokens: s.maxAnswerTokens, temperature: 0 })).map(
      (c) => c[0]!.text,
    );
    const failed: number[] = [];
    chunk.forEach((it, j) => (task.verify(it, answers[j]!).ok ? first++ : failed.push(j)));
    second += chunk.length - failed.length;
    if (failed.length) {
      const reflections = await policy.generate(
        failed.map((j) => ({ prompt: policy.promptTokens(buildReflectConversation(prompts[j]!, answers[j]!, task.reflectionPrompt)) })),
        { maxTokens: s.maxReflectionTokens, temperature: 0 },
      );
      const retries = await policy.generate(
        failed.map((j, k) => ({
          prompt: policy.promptTokens(
            buildRetryConversation(prompts[j]!, answers[j]!, task.reflectionPrompt, reflections[k]![0]!.text, task.retryPrompt),
          ),
        })),
        { maxTokens: s.maxAnswerTokens, temperature: 0 },
      );
      failed.forEach((j, k) => {
        if (task.verify(chunk[j]!, retries[k]![0]!.text).ok) second++;
      });
    }
    s.onProgress?.(Math.min(i + s.batchSize, items.length), items.length);
  }
  return {
    tasks: items.length,
    firstCorrect: first,
    secondCorrect: second,
    firstAccuracy: items.length ? first / items.length : 0,
    secondAccuracy: items.length ? second / items.length : 0,
  };
}

// Reflect and Retry for a batch of failed tasks: G reflections per task sampled from one shared
// prompt prefix, then one retry per reflection, scored by the task's verifier.
import { buildReflectConversation, buildRetryConversation } from '../tasks/conversation.js';
import { sharedStartRequests } from './shared-start.js';
import type { Failure, Group, Policy } from './types.js';
import type { AnyTask, TaskItem } from '../tasks/types.js';

export interface EpisodeSettings {
  groupSize: number;
  reflectionTemperature: number;
  retryTemperature: number;
  maxReflectionTokens: number;
  maxAnswerTokens: number;
  /** Seed of this batch's sampling; derive it from (run seed, step) so resumes replay exactly. */
  seed: number;
  onProgress?: (generatedTokens: number) => void;
  /** Aborting ends the episode's generation (GenerationStopped). */
  signal?: AbortSignal;
}

export interface EpisodeInput {
  item: TaskItem;
  failure: Failure;
}

export async function reflectAndRetry(policy: Policy, task: AnyTask, batch: EpisodeInput[], s: EpisodeSettings): Promise<Group[]> {
  const firstPrompts = batch.map((b) => task.buildPrompt(b.item));
  const reflectPrompts = batch.map((b, i) =>
    policy.promptTokens(buildReflectConversation(firstPrompts[i]!, b.failure.firstAnswer, task.reflectionPrompt)),
  );
  let generated = 0;
  const progress = (n: number) => s.onProgress?.(generated + n);
  const reflections = await policy.generate(
    reflectPrompts.map((prompt) => ({ prompt, n: s.groupSize })),
    { maxTokens: s.maxReflectionTokens, temperature: s.reflectionTemperature, seed: s.seed, onProgress: progress, ...(s.signal && { signal: s.signal }) },
  );
  generated += reflections.flat().reduce((a, c) => a + c.tokens.length, 0);

  // A task's retries share its reflection prompt: one request each, that start prefilled once.
  const retryRequests = batch.flatMap((b, i) =>
    sharedStartRequests(
      reflections[i]!.map((r) =>
        policy.promptTokens(buildRetryConversation(firstPrompts[i]!, b.failure.firstAnswer, task.reflectionPrompt, r.text, task.retryPrompt)),
      ),
    ),
  );
  const retries = (
    await policy.generate(retryRequests, {
      maxTokens: s.maxAnswerTokens,
      temperature: s.retryTemperature,
      seed: s.seed + 1,
      onProgress: progress,
      ...(s.signal && { signal: s.signal }),
    })
  ).flat();

  return batch.map((b, i) => {
    const mine = retries.slice(i * s.groupSize, (i + 1) * s.groupSize);
    const verdicts = mine.map((r) => task.verify(b.item, r.text));
    return {
      itemId: b.item.id,
      reflectPrompt: reflectPrompts[i]!,
      reflections: reflections[i]!,
      retries: mine,
      rewards: verdicts.map((v) => (v.ok ? 1 : 0)),
      reasons: verdicts.map((v) => v.reason),
    };
  });
}

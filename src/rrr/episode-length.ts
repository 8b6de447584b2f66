// The longest sequence an episode can reach: its retry prompt, with the first answer and the
// reflection at their token limits, plus the retry. Checked before a run starts, so a context
// too short fails there rather than at whichever step first meets the longest item.
import { buildRetryConversation } from '../tasks/conversation.js';
import type { TaskItem } from '../tasks/types.js';
import type { AnyTask, Policy } from './types.js';

/**
 * Tokens a generated text may gain when its decoded text is tokenized again inside the retry
 * prompt (other merges at its ends, a cut UTF-8 character decoded as U+FFFD): measured on the
 * demo model with random tokens, the retry prompts ran past the sum by up to 1 token at
 * temperature 1 and 3 at temperature 2 (64 failures x 8 reflections each).
 */
export const RETOKENIZE_SLACK = 4;

export interface EpisodeLength {
  itemId: string;
  /** The retry conversation's tokens with an empty first answer and reflection. */
  promptTokens: number;
  /** promptTokens + 2 × maxAnswerTokens + maxReflectionTokens + 3 × RETOKENIZE_SLACK. */
  tokens: number;
}

export function longestEpisode(
  policy: Pick<Policy, 'promptTokens'>,
  task: AnyTask,
  items: readonly TaskItem[],
  s: { maxAnswerTokens: number; maxReflectionTokens: number },
): EpisodeLength {
  let longest: Omit<EpisodeLength, 'tokens'> | undefined;
  for (const item of items) {
    const conv = buildRetryConversation(task.buildPrompt(item), '', task.reflectionPrompt, '', task.retryPrompt);
    const promptTokens = policy.promptTokens(conv).length;
    if (!longest || promptTokens > longest.promptTokens) longest = { itemId: item.id, promptTokens };
  }
  if (!longest) throw new Error('longestEpisode: no items');
  return { ...longest, tokens: longest.promptTokens + 2 * s.maxAnswerTokens + s.maxReflectionTokens + 3 * RETOKENIZE_SLACK };
}

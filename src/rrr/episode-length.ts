// The longest sequence an episode can reach: its retry prompt, with the first answer and the
// reflection at their token limits, plus the retry. Checked before a run starts, so a context
// too short fails there rather than at whichever step first meets the longest item.
import { buildRetryConversation } from '../tasks/conversation.js';
import type { AnyTask, ChatMessage, TaskItem } from '../tasks/types.js';
import type { EpisodeLength } from './types.js';

/**
 * Tokens a generated text may gain when its decoded text is tokenized again inside the retry
 * prompt (other merges at its ends, a cut UTF-8 character decoded as U+FFFD): measured on the
 * demo model with random tokens, the retry prompts ran past the sum by up to 1 token at
 * temperature 1 and 3 at temperature 2 (64 failures x 8 reflections each).
 */
export const RETOKENIZE_SLACK = 4;

/** Token counts of chat conversations, as the policy's template and tokenizer make them. */
export type CountPromptTokens = (conversations: ChatMessage[][]) => Promise<ArrayLike<number>>;

/** Items per counting call: the progress a large dataset shows, at little cost per call. */
const CHUNK = 2048;

export async function longestEpisode(
  count: CountPromptTokens,
  task: AnyTask,
  items: readonly TaskItem[],
  s: { maxAnswerTokens: number; maxReflectionTokens: number },
  onProgress?: (done: number) => void,
): Promise<EpisodeLength> {
  let longest: { itemId: string; promptTokens: number } | undefined;
  for (let i = 0; i < items.length; i += CHUNK) {
    const chunk = items.slice(i, i + CHUNK);
    const counts = await count(chunk.map((item) => buildRetryConversation(task.buildPrompt(item), '', task.reflectionPrompt, '', task.retryPrompt)));
    chunk.forEach((item, j) => {
      const promptTokens = counts[j]!;
      if (!longest || promptTokens > longest.promptTokens) longest = { itemId: item.id, promptTokens };
    });
    onProgress?.(i + chunk.length);
  }
  if (!longest) throw new Error('longestEpisode: no items');
  const slackTokens = 3 * RETOKENIZE_SLACK;
  return { ...longest, slackTokens, tokens: longest.promptTokens + 2 * s.maxAnswerTokens + s.maxReflectionTokens + slackTokens };
}

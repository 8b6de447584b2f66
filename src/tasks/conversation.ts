/**
 * The three conversations of one RRR episode, built from the same first
 * prompt so that the tokens of the first attempt and of the reflection are
 * identical in every sequence (the loop relies on that for prefix sharing and
 * for locating the reflection tokens to train on).
 *
 *   first:   prompt…
 *   reflect: prompt… + assistant(first answer) + user(reflection prompt)
 *   retry:   reflect… + assistant(reflection) + user(retry prompt)
 */
import { DEFAULT_RETRY_PROMPT } from './prompts.js';
import type { ChatMessage } from './types.js';

function copyPrompt(firstPrompt: readonly ChatMessage[]): ChatMessage[] {
  if (firstPrompt.length === 0) {
    throw new RangeError('the first-attempt prompt has no messages');
  }
  const last = firstPrompt[firstPrompt.length - 1];
  if (last?.role === 'assistant') {
    // The next message we add is the assistant's answer; two assistant turns
    // in a row would render as one turn in most chat templates.
    throw new RangeError('the first-attempt prompt must not end with an assistant message');
  }
  return firstPrompt.map((m) => ({ role: m.role, content: m.content }));
}

export function buildReflectConversation(
  firstPrompt: readonly ChatMessage[],
  firstAnswer: string,
  reflectionPrompt: string,
): ChatMessage[] {
  return [
    ...copyPrompt(firstPrompt),
    { role: 'assistant', content: firstAnswer },
    { role: 'user', content: reflectionPrompt },
  ];
}

export function buildRetryConversation(
  firstPrompt: readonly ChatMessage[],
  firstAnswer: string,
  reflectionPrompt: string,
  reflection: string,
  retryPrompt: string = DEFAULT_RETRY_PROMPT,
): ChatMessage[] {
  return [
    ...buildReflectConversation(firstPrompt, firstAnswer, reflectionPrompt),
    { role: 'assistant', content: reflection },
    { role: 'user', content: retryPrompt },
  ];
}

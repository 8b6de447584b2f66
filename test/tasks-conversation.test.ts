import { syntheticTask } from '../src/tasks/synthetic.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildReflectConversation,
  buildRetryConversation,
} from '../src/tasks/conversation.js';
import { DEFAULT_RETRY_PROMPT, FUNCTION_CALLING_REFLECTION_PROMPT, MATH_REFLECTION_PROMPT } from '../src/tasks/prompts.js';
import type { ChatMessage } from '../src/tasks/types.js';
import { countdownTask, COUNTDOWN_RETRY_PROMPT } from '../src/tasks/countdown.js';
import { functionCallingTask } from '../src/tasks/function-calling.js';
import { taskByName, TASKS } from '../src/tasks/index.js';

const prompt: ChatMessage[] = [
  { role: 'system', content: 'sys' },
  { role: 'user', content: 'solve it' },
];

test('reflect conversation: prompt + failed answer + reflection prompt', () => {
  const c = buildReflectConversation(prompt, 'wrong answer', 'reflect please');
  assert.deepEqual(c, [
    { role: 'system', content: 'sys' },
    { role: 'user', content: 'solve it' },
    { role: 'assistant', content: 'wrong answer' },
    { role: 'user', content: 'reflect please' },
  ]);
});

test('retry conversation: reflect conversation + reflection + retry instruction', () => {
  const c = buildRetryConversation(prompt, 'wrong answer', 'reflect please', 'I misread the target');
  assert.deepEqual(c, [
    { role: 'system', content: 'sys' },
    { role: 'user', content: 'solve it' },
    { role: 'assistant', content: 'wrong answer' },
    { role: 'user', content: 'reflect please' },
    { role: 'assistant', content: 'I misread the target' },
    { role: 'user', content: 'Try again.' },
  ]);
  assert.equal(DEFAULT_RETRY_PROMPT, 'Try again.');
  const custom = buildRetryConversation(prompt, 'a', 'r', 'x', 'Once more, please.');
  assert.deepEqual(custom.at(-1), { role: 'user', content: 'Once more, please.' });
});

test('the retry conversation extends the reflect conversation unchanged (shared prefix)', () => {
  const reflect = buildReflectConversation(prompt, 'A', 'R');
  const retry = buildRetryConversation(prompt, 'A', 'R', 'REFL');
  assert.deepEqual(retry.slice(0, reflect.length), reflect);
  assert.deepEqual(retry[reflect.length], { role: 'assistant', content: 'REFL' });
});

test('inputs are not mutated and outputs do not alias them', () => {
  const p: ChatMessage[] = [{ role: 'user', content: 'q' }];
  const c = buildRetryConversation(p, 'a', 'r', 'x');
  assert.equal(p.length, 1);
  (c[0] as ChatMessage).content = 'changed';
  assert.equal(p[0]?.content, 'q');
});

test('rejects an empty prompt and a prompt ending with an assistant turn', () => {
  assert.throws(() => buildReflectConversation([], 'a', 'r'), /no messages/);
  assert.throws(
    () => buildReflectConversation([{ role: 'user', content: 'q' }, { role: 'assistant', content: 'x' }], 'a', 'r'),
    /must not end with an assistant/,
  );
});

test('reflection prompts are the exact texts of the paper', () => {
  assert.equal(
    FUNCTION_CALLING_REFLECTION_PROMPT,
    'You tried performing the task, but failed in generating the correct tool call. Reflect on what went wrong and write a short explanation that will help you do better next time.',
  );
  assert.equal(
    MATH_REFLECTION_PROMPT,
    'You tried solving the problem and got the wrong answer. Reflect on what went wrong and write a short explanation that will help you do better next time.',
  );
  assert.equal(countdownTask.reflectionPrompt, MATH_REFLECTION_PROMPT);
  assert.equal(functionCallingTask.reflectionPrompt, FUNCTION_CALLING_REFLECTION_PROMPT);
  assert.equal(countdownTask.retryPrompt, COUNTDOWN_RETRY_PROMPT);
});

test('tasks are found by name; unknown names give a one-line error listing the known ones', () => {
  assert.equal(taskByName('countdown'), countdownTask);
  assert.equal(taskByName('function-calling'), functionCallingTask);
  assert.equal(taskByName('synthetic'), syntheticTask);
  assert.deepEqual([...TASKS.keys()].sort(), ['countdown', 'function-calling', 'synthetic']);
  assert.throws(() => taskByName('chess'), /^RangeError: unknown task "chess" \(known: countdown, function-calling, synthetic\)$/);
});

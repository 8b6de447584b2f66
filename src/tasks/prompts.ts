// The method's prompts (DESIGN.md, after the paper): the reflection request of each kind of task,
// and the retry's.

export const FUNCTION_CALLING_REFLECTION_PROMPT =
  'You tried performing the task, but failed in generating the correct tool call. ' +
  'Reflect on what went wrong and write a short explanation that will help you do better next time.';

export const MATH_REFLECTION_PROMPT =
  'You tried solving the problem and got the wrong answer. ' +
  'Reflect on what went wrong and write a short explanation that will help you do better next time.';

export const DEFAULT_RETRY_PROMPT = 'Try again.';

/**
 * Countdown: given numbers and a target, write an arithmetic expression that
 * uses every given number exactly once and equals the target.
 *
 * Dataset format (the public Countdown-Tasks-3to4 layout), one JSON object per
 * line: {"nums": [44, 19, 35], "target": 98} with an optional "id".
 *
 * Answer format asked for: the final expression inside <answer>…</answer>.
 * Anything up to a closing </think> is ignored (a thinking model's drafts), as
 * the function-calling parser does. Extraction, in order of preference:
 *   1. the content of the LAST complete <answer>…</answer> block (tags are
 *      case-insensitive), so drafts in earlier blocks do not count;
 *   2. otherwise the content of the last \boxed{…} (math-tuned models use it);
 *   3. otherwise the last line that looks like an arithmetic expression
 *      (only digits, operators, parentheses, spaces and "="; at least one digit
 *      and one operator), after stripping markdown/LaTeX wrappers, a list
 *      marker ("- ", "1. ") and a leading "Answer:" style label.
 * The answer may end with "= <number>" or start with "<number> =" (an integer,
 * signed or not, "98.0" too), in which case the number must be the target; the
 * expression side is checked.
 *
 * Verification (see arith.ts for the grammar and accepted operator symbols):
 * parse; the multiset of literals must equal the multiset of given numbers;
 * evaluate exactly (division by zero fails); the value must equal the target.
 * Intermediate non-integer values are allowed by default ("7 / 2 * 4" = 14 is
 * fine), because the public dataset's reward does the same; `integerSteps`
 * forbids them.
 */
import { ArithError, MAX_DIGITS, MAX_EXPRESSION_LENGTH, evaluate, numbersIn, parseExpression } from './arith.js';
import { InvalidRecord, expectObject, readJsonl, recordId } from './jsonl.js';
import { MATH_REFLECTION_PROMPT } from './prompts.js';
import {
  type ChatMessage,
  type LoadOptions,
  type LoadResult,
  type Task,
  type VerifyResult,
} from './types.js';
import { generateCountdown, type CountdownGenOptions } from './countdown-generate.js';

export { generateCountdown, solveCountdown, type CountdownGenOptions } from './countdown-generate.js';

export interface CountdownItem {
  id: string;
  nums: number[];
  target: number;
  /** Known solution, present on generated items. */
  solution?: string;
}

export interface CountdownVerifyOptions {
  /** Forbid non-integer intermediate results. Default false. */
  integerSteps?: boolean;
  /** Only accept an answer inside <answer> tags (no \boxed or last-line fallback). Default false. */
  requireTags?: boolean;
}

export const COUNTDOWN_RETRY_PROMPT =
  'Try again. Give your final expression inside <answer> and </answer> tags.';

const MIN_NUMS = 2;
const MAX_NUMS = 8;

// ---- loading --------------------------------------------------------------------

export function toCountdownItem(value: unknown, line: number, nth?: number): CountdownItem {
  const o = expectObject(value);
  const nums = o['nums'];
  if (
    !Array.isArray(nums) ||
    !nums.every((x): x is number => typeof x === 'number' && Number.isSafeInteger(x))
  ) {
    throw new InvalidRecord('expected "nums" to be an array of integers');
  }
  if (nums.some((x) => x < 0)) {
    // Unary minus is not part of the answer grammar, so a negative number
    // could never be written.
    throw new InvalidRecord('expected "nums" to hold non-negative integers');
  }
  if (nums.some((x) => String(x).length > MAX_DIGITS)) {
    // Nor could a number longer than the answer grammar reads.
    throw new InvalidRecord(`expected "nums" to hold numbers of at most ${MAX_DIGITS} digits`);
  }
  if (nums.length < MIN_NUMS || nums.length > MAX_NUMS) {
    throw new InvalidRecord(
      `expected "nums" to hold ${MIN_NUMS} to ${MAX_NUMS} numbers (got ${nums.length})`,
    );
  }
  const target = o['target'];
  if (typeof target !== 'number' || !Number.isSafeInteger(target)) {
    throw new InvalidRecord('expected "target" to be an integer');
  }
  return { id: recordId(o, line, nth), nums: [...nums], target };
}

export function loadCountdown(path: string, opts: LoadOptions = {}): Promise<LoadResult<CountdownItem>> {
  return readJsonl(path, toCountdownItem, opts);
}

// ---- prompt -----------------------------------------------------------------------

/**
 * No system message: the model's chat template supplies its default one, as
 * in the paper's setup.
 */
export function buildCountdownPrompt(item: CountdownItem): ChatMessage[] {
  return [
    {
      role: 'user',
      content:
        `Using the numbers [${item.nums.join(', ')}], create an arithmetic expression that equals ${item.target}. ` +
        'Use every number exactly once. You may use +, -, *, / and parentheses. ' +
        'Think it through, then write only the final expression inside <answer> and </answer> tags, ' +
        'for example <answer>(1 + 2) * 3</answer>.',
    },
  ];
}

// ---- answer extraction --------------------------------------------------------------

export interface ExtractedAnswer {
  expression: string;
  source: 'tags' | 'boxed' | 'line';
}

const EXPRESSION_LINE = /^[0-9\s+\-\u2212\u2013*\u00d7xX\u00b7\u22c5/\u00f7()=]+$/;
// LaTeX operators the grammar reads (arith.ts), allowed in a line without being letters there.
const LATEX_OPERATORS = /\\(?:times|cdot|div)(?![A-Za-z])/g;
const LIST_MARKER = /^(?:[-*•]|\d{1,2}[.)])\s+/;
const HAS_OPERATOR = /[+\-\u2212\u2013*\u00d7xX\u00b7\u22c5/\u00f7]/;

export function extractCountdownAnswer(answer: string): ExtractedAnswer | null {
  const thinkEnd = answer.lastIndexOf('</think>');
  const text = thinkEnd >= 0 ? answer.slice(thinkEnd + '</think>'.length) : answer;
  const last = lastAnswerBlock(text);
  if (last !== null) return { expression: cleanup(last), source: 'tags' };

  const boxed = lastBoxed(text);
  if (boxed !== null) return { expression: cleanup(boxed), source: 'boxed' };

  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = cleanup(cleanup(cleanup(lines[i] as string).replace(LIST_MARKER, '')).replace(/^[A-Za-z ]{0,20}:\s*/, ''));
    const symbols = line.replace(LATEX_OPERATORS, '*');
    if (EXPRESSION_LINE.test(symbols) && /[0-9]/.test(line) && HAS_OPERATOR.test(symbols)) {
      return { expression: line.trim(), source: 'line' };
    }
  }
  return null;
}

/**
 * The content of the last complete <answer>…</answer> (tags in any case): the opening tag nearest
 * before the last closing tag, up to the first closing tag after it. Searches from the end, so a
 * long run of unclosed tags costs one pass, where a lazy regex would rescan the rest of the text
 * from each.
 */
function lastAnswerBlock(text: string): string | null {
  const lower = text.toLowerCase();
  const close = lower.lastIndexOf('</answer>');
  if (close < 0) return null;
  const open = lower.lastIndexOf('<answer>', close - '<answer>'.length);
  if (open < 0) return null;
  const start = open + '<answer>'.length;
  return text.slice(start, lower.indexOf('</answer>', start));
}

/**
 * Strips wrappers models put around an expression, repeatedly, from the ends
 * only: **bold**, `code`, $…$, \(…\), \[…\], a final period. Stripping only
 * at the ends keeps "2 ** 3" intact so it is refused as exponentiation.
 */
function cleanup(s: string): string {
  let t = s.trim();
  for (;;) {
    const next = t
      .replace(/^(\*\*|`+|\$+|\\[([])\s*/, '')
      .replace(/\s*(\*\*|`+|\$+|\\[)\]]|\.)$/, '')
      .trim();
    if (next === t) return t;
    t = next;
  }
}

function lastBoxed(text: string): string | null {
  const at = text.lastIndexOf('\\boxed{');
  if (at < 0) return null;
  let depth = 0;
  for (let i = at + '\\boxed'.length; i < text.length; i++) {
    const c = text[i];
    if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return text.slice(at + '\\boxed{'.length, i);
  }
  return null;
}

// ---- verification -----------------------------------------------------------------

const fail = (reason: string): VerifyResult => ({ ok: false, reason });

function times(n: number): string {
  return n === 1 ? 'once' : n === 2 ? 'twice' : `${n} times`;
}

/** Checks one expression (already extracted) against the numbers and target. */
export function checkCountdownExpression(
  nums: readonly number[],
  target: number,
  answer: string,
  opts: CountdownVerifyOptions = {},
): VerifyResult {
  let expr = answer.trim();
  if (expr === '') return fail('empty answer');
  if (expr.length > MAX_EXPRESSION_LENGTH) {
    return fail(`answer is too long (${expr.length} characters, limit ${MAX_EXPRESSION_LENGTH})`);
  }

  const sides = expr.split('=');
  if (sides.length > 2) return fail("more than one '=' in the answer");
  if (sides.length === 2) {
    const [l, r] = sides.map((s) => s.trim()) as [string, string];
    const plain = /^[+\-\u2212]?\d+(?:\.0+)?$/;
    const claimed = plain.test(r) ? r : plain.test(l) ? l : null;
    if (claimed === null) return fail("expected an expression, or an expression '= target'");
    if (BigInt(claimed.replace('\u2212', '-').replace(/\.0+$/, '')) !== BigInt(target)) {
      return fail(`the answer claims ${claimed}, but the target is ${target}`);
    }
    expr = claimed === r ? l : r;
  }

  let value;
  let used: bigint[];
  try {
    const node = parseExpression(expr);
    used = numbersIn(node);
    const problem = numberUsageProblem(nums, used);
    if (problem !== null) return fail(problem);
    value = evaluate(node, expr, { integerSteps: opts.integerSteps ?? false });
  } catch (err) {
    if (err instanceof ArithError) return fail(err.message);
    throw err;
  }
  if (!value.isInteger() || value.num !== BigInt(target)) {
    return fail(`${expr} = ${value}, not the target ${target}`);
  }
  return { ok: true, reason: `${expr} = ${target}` };
}

/** null when the literals are exactly the given multiset; otherwise every difference, "; "-joined. */
function numberUsageProblem(nums: readonly number[], used: readonly bigint[]): string | null {
  const given = new Map<string, number>();
  for (const x of nums) given.set(String(x), (given.get(String(x)) ?? 0) + 1);
  const seen = new Map<string, number>();
  for (const x of used) seen.set(x.toString(), (seen.get(x.toString()) ?? 0) + 1);

  const problems: string[] = [];
  for (const [x, n] of seen) {
    const g = given.get(x) ?? 0;
    if (g === 0) problems.push(`used ${x}, which is not one of the given numbers`);
    else if (n > g) problems.push(`used ${x} ${times(n)} (given ${times(g)})`);
  }
  for (const [x, g] of given) {
    const n = seen.get(x) ?? 0;
    if (n === 0) problems.push(`did not use ${x}`);
    else if (n < g) problems.push(`used ${x} ${times(n)} (given ${times(g)})`);
  }
  return problems.length === 0 ? null : problems.join('; ');
}

export function verifyCountdown(
  item: Pick<CountdownItem, 'nums' | 'target'>,
  answerText: string,
  opts: CountdownVerifyOptions = {},
): VerifyResult {
  const extracted = extractCountdownAnswer(answerText);
  if (extracted === null) return fail('no answer found (expected <answer>expression</answer>)');
  if (opts.requireTags && extracted.source !== 'tags') {
    return fail('no <answer></answer> block found');
  }
  return checkCountdownExpression(item.nums, item.target, extracted.expression, opts);
}

// ---- the task -----------------------------------------------------------------------

export function createCountdownTask(
  verifyOpts: CountdownVerifyOptions = {},
): Task<CountdownItem, CountdownGenOptions> {
  return {
    name: 'countdown',
    reflectionPrompt: MATH_REFLECTION_PROMPT,
    retryPrompt: COUNTDOWN_RETRY_PROMPT,
    buildPrompt: (item) => buildCountdownPrompt(item),
    verify: (item, answerText) => verifyCountdown(item, answerText, verifyOpts),
    load: (path, opts) => loadCountdown(path, opts),
    generate: (n, seed, opts) => generateCountdown(n, seed, opts),
  };
}

export const countdownTask = createCountdownTask();

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildCountdownPrompt,
  checkCountdownExpression,
  countdownTask,
  createCountdownTask,
  extractCountdownAnswer,
  generateCountdown,
  solveCountdown,
  toCountdownItem,
  verifyCountdown,
  type CountdownItem,
} from '../src/tasks/countdown.js';
import { MAX_EXPRESSION_LENGTH, parseExpression, tokenize } from '../src/tasks/arith.js';
import { DataError, parseJsonlText } from '../src/tasks/jsonl.js';

const tagged = (e: string): string => `Let me think.\n<answer>${e}</answer>`;

function ok(it: Pick<CountdownItem, 'nums' | 'target'>, answer: string, opts = {}): void {
  const r = verifyCountdown(it, answer, opts);
  assert.equal(r.ok, true, `expected success for ${JSON.stringify(answer)}, got: ${r.reason}`);
}
function bad(it: Pick<CountdownItem, 'nums' | 'target'>, answer: string, reason: RegExp | string, opts = {}): void {
  const r = verifyCountdown(it, answer, opts);
  assert.equal(r.ok, false, `expected failure for ${JSON.stringify(answer)}`);
  if (typeof reason === 'string') assert.equal(r.reason, reason);
  else assert.match(r.reason, reason);
  assert.ok(!r.reason.includes('\n'));
}

// ---- right answers --------------------------------------------------------------------

const A: CountdownItem = { id: 'a', nums: [4, 7, 8, 25], target: 100 };

test('correct answers: parentheses, operator spellings, any order of numbers', () => {
  ok(A, tagged('(8 - 7) * 25 * 4'));
  ok(A, tagged('25 * 4 * (8 - 7)'));
  ok(A, tagged('((8 - 7)) * (25 * 4)'));
  ok(A, tagged('25 × 4 × (8 − 7)'));
  ok(A, tagged('25 x 4 / (8 - 7)'));
  ok(A, tagged('25 X 4 ÷ (8 – 7)'));
  ok(A, tagged('4 \\times 25 \\cdot (8-7)'));
  ok(A, tagged('  (8-7)*25*4  '));
  ok(A, tagged('`(8 - 7) * 25 * 4`'));
  ok(A, tagged('$(8 - 7) * 25 * 4$'));
});

test('the reason of a success shows the expression and the target', () => {
  assert.deepEqual(verifyCountdown(A, tagged('(8 - 7) * 25 * 4')), { ok: true, reason: '(8 - 7) * 25 * 4 = 100' });
});

test('an answer may state the result: "expr = target" or "target = expr"', () => {
  ok(A, tagged('(8 - 7) * 25 * 4 = 100'));
  ok(A, tagged('100 = (8 - 7) * 25 * 4'));
  bad(A, tagged('(8 - 7) * 25 * 4 = 99'), 'the answer claims 99, but the target is 100');
  bad(A, tagged('1 = 1 = 100'), "more than one '=' in the answer");
  bad(A, tagged('25 * 4 = (8 - 7) * 100'), "expected an expression, or an expression '= target'");
  ok(A, tagged('(8 - 7) * 25 * 4 = 100.0'));
  ok(A, tagged('(8 - 7) * 25 * 4 = +100'));
  // A negative target (the loader takes any integer) can be claimed.
  ok({ nums: [3, 5], target: -2 }, tagged('3 - 5 = -2'));
  ok({ nums: [3, 5], target: -2 }, tagged('3 - 5 = \u22122'));
  bad(A, tagged('(8 - 7) * 25 * 4 = 100.5'), "expected an expression, or an expression '= target'");
});

test('exact arithmetic: fractions along the way are exact (floats would give 0.9999999999999999)', () => {
  const it = { nums: [1, 49, 49], target: 1 };
  ok(it, tagged('1 / 49 * 49'));
  bad(it, tagged('1 / 49 * 49'), '1 / 49 = 1/49 is not an integer', { integerSteps: true });
  ok(it, tagged('49 / 49 * 1'), { integerSteps: true });
});

test('non-integer intermediate values are allowed by default, refused with integerSteps', () => {
  const it = { nums: [7, 2, 4], target: 14 };
  ok(it, tagged('7 / 2 * 4'));
  bad(it, tagged('7 / 2 * 4'), '7 / 2 = 7/2 is not an integer', { integerSteps: true });
  bad(it, tagged('4 * (7 / 2)'), '(7 / 2) = 7/2 is not an integer', { integerSteps: true });
  ok(it, tagged('7 * (4 / 2)'), { integerSteps: true });
  // a non-integer final value is a wrong answer, shown as a fraction
  bad({ nums: [7, 2, 4], target: 3 }, tagged('7 / (2 * 4)'), '7 / (2 * 4) = 7/8, not the target 3');
});

// ---- wrong answers ----------------------------------------------------------------------

test('wrong value', () => {
  bad(A, tagged('(8 + 7) * 25 * 4'), '(8 + 7) * 25 * 4 = 1500, not the target 100');
  bad(A, tagged('25 * 4 - 8 + 7'), '25 * 4 - 8 + 7 = 99, not the target 100');
});

test('numbers: reused, missing, not given, given twice', () => {
  bad(A, tagged('25 * 4 * (8 - 8)'), 'used 8 twice (given once); did not use 7');
  bad(A, tagged('25 * 4'), 'did not use 7; did not use 8');
  bad(A, tagged('25 * 4 * (8 - 7) * 1'), 'used 1, which is not one of the given numbers');
  bad(A, tagged('100'), 'used 100, which is not one of the given numbers; did not use 4; did not use 7; did not use 8; did not use 25');
  const twice = { nums: [5, 5, 2], target: 27 };
  ok(twice, tagged('5 * 5 + 2'));
  bad(twice, tagged('5 + 2'), /^used 5 once \(given twice\)/);
  bad(twice, tagged('5 * 5 + 2 + 5 - 5'), 'used 5 4 times (given twice)');
});

test('division by zero fails with the offending sub-expression', () => {
  const it = { nums: [4, 4, 5, 25], target: 5 };
  bad(it, tagged('25 / (4 - 4) + 5'), 'division by zero in 25 / (4 - 4)');
  bad(it, tagged('(4 - 4) / (4 - 4) * 5'), /^used 4 4 times/); // numbers are checked first
});

test('syntax: unary minus/plus, unbalanced parentheses, decimals, powers, junk', () => {
  const two = { nums: [3, 5], target: 2 };
  ok(two, tagged('5 - 3'));
  bad(two, tagged('-3 + 5'), 'unary minus is not allowed (at position 1)');
  bad(two, tagged('5 + (-3)'), 'unary minus is not allowed (at position 6)');
  bad(two, tagged('+5 - 3'), 'unary plus is not allowed (at position 1)');
  bad(A, tagged('(8 - 7 * 25 * 4'), "missing ')' for '(' at position 1");
  bad(A, tagged('8 - 7) * 25 * 4'), "unexpected ')' at position 6");
  bad(A, tagged('() * 8'), "unexpected ')' at position 2");
  bad(A, tagged('2.5 * 4'), 'decimal numbers are not allowed (at position 1)');
  bad(A, tagged('2^3'), 'exponentiation is not allowed (at position 2)');
  bad(A, tagged('2 ** 3'), 'exponentiation is not allowed (at position 3)');
  bad(A, tagged('twenty five'), "unexpected character 't' at position 1");
  bad(A, tagged('25 4 8 7'), 'expected an operator at position 4');
  bad(A, tagged('25 * 4 +'), 'unexpected end of expression');
  bad(A, tagged('* 25'), 'expected a number at position 1');
  bad(A, tagged(''), 'empty answer');
  bad(A, tagged('25 * 4 * (8 - 7); print(1)'), "unexpected character ';' at position 17");
});

test('no answer at all, or an unclosed tag, is a failure', () => {
  bad(A, "I don't know how to do this.", 'no answer found (expected <answer>expression</answer>)');
  bad(A, '', 'no answer found (expected <answer>expression</answer>)');
  bad(A, '<answer>(8 - 7) * 25 * 4', 'no answer found (expected <answer>expression</answer>)');
});

test('absurd inputs are refused quickly', () => {
  const long = Array.from({ length: 200 }, () => '1').join(' + ');
  bad(A, tagged(long), `answer is too long (${long.length} characters, limit ${MAX_EXPRESSION_LENGTH})`);
  const deep = `${'('.repeat(40)}25${')'.repeat(40)}`;
  bad({ nums: [25, 1], target: 25 }, tagged(deep), 'parentheses nested too deeply (limit 32)');
  bad(A, tagged('1234567890123456 + 1'), 'number too long at position 1');
  // a megabyte of noise before the answer is fine
  const t0 = Date.now();
  ok(A, `${'blah (( [ 1 + '.repeat(80_000)}\n<answer>(8 - 7) * 25 * 4</answer>`);
  assert.ok(Date.now() - t0 < 2000);
});

// ---- extraction -------------------------------------------------------------------------

test('extraction: the last <answer> block wins; tags are case-insensitive', () => {
  ok(A, '<answer>25 * 4</answer> hmm, that misses numbers. <answer>(8 - 7) * 25 * 4</answer>');
  bad(A, '<answer>(8 - 7) * 25 * 4</answer> or maybe <answer>25 * 4</answer>', 'did not use 7; did not use 8');
  ok(A, 'So: <ANSWER>(8 - 7) * 25 * 4</Answer>');
  assert.deepEqual(extractCountdownAnswer('x <answer> 1 + 2 </answer>'), { expression: '1 + 2', source: 'tags' });
  // An unclosed tag before the last block, or a stray closing tag after it, is not part of it.
  assert.deepEqual(extractCountdownAnswer('<answer>draft <answer>1 + 2</answer>'), { expression: '1 + 2', source: 'tags' });
  assert.deepEqual(extractCountdownAnswer('<answer>1 + 2</answer> so </answer>'), { expression: '1 + 2', source: 'tags' });
  assert.equal(extractCountdownAnswer('</answer> <answer>1 + 2'), null);
});

test('extraction fallbacks: \\boxed{…}, then the last expression-looking line', () => {
  assert.deepEqual(extractCountdownAnswer('Thus \\boxed{(8 - 7) \\times 25 \\times 4}.'), {
    expression: '(8 - 7) \\times 25 \\times 4',
    source: 'boxed',
  });
  ok(A, 'Thus \\boxed{(8 - 7) \\times 25 \\times 4}.');
  ok(A, 'The answer is:\n(8 - 7) * 25 * 4');
  ok(A, 'Answer: $(8-7)*25*4$.');
  ok(A, '**(8 - 7) * 25 * 4 = 100**');
  ok(A, 'First 25 * 4 = 100.\nSo the expression is\n(8 - 7) * 25 * 4\nThat is it!');
  assert.deepEqual(extractCountdownAnswer('Try:\n25 * 4\nno wait\n(8 - 7) * 25 * 4\nDone.'), {
    expression: '(8 - 7) * 25 * 4',
    source: 'line',
  });
  assert.equal(extractCountdownAnswer('The year 2024 was fine.\nNumbers: 25'), null);
  // A list marker is not part of the line's expression; LaTeX operators are operators there too.
  ok(A, 'So:\n- (8 - 7) * 25 * 4');
  ok(A, 'Steps:\n1. (8 - 7) * 25 * 4');
  ok(A, 'So:\n$(8 - 7) \\times 25 \\cdot 4$');
  bad(A, '- (8 - 7) * 25 + 4', '(8 - 7) * 25 + 4 = 29, not the target 100');
});

test("extraction: a thinking model's drafts before </think> do not count", () => {
  bad(A, '<think>draft <answer>(8 - 7) * 25 * 4</answer></think>\nSo:\n25 * 4 + (8 - 7)', '25 * 4 + (8 - 7) = 101, not the target 100');
  ok(A, '<think>draft <answer>25 * 4</answer></think>\n<answer>(8 - 7) * 25 * 4</answer>');
  assert.equal(extractCountdownAnswer('<think>(8 - 7) * 25 * 4</think>\nI give up.'), null);
});

test('requireTags refuses the fallbacks', () => {
  bad(A, 'The answer is:\n(8 - 7) * 25 * 4', 'no <answer></answer> block found', { requireTags: true });
  ok(A, tagged('(8 - 7) * 25 * 4'), { requireTags: true });
  const strict = createCountdownTask({ requireTags: true, integerSteps: true });
  assert.equal(strict.verify({ id: 'x', nums: [7, 2, 4], target: 14 }, tagged('7 / 2 * 4')).ok, false);
  assert.equal(countdownTask.verify({ id: 'x', nums: [7, 2, 4], target: 14 }, tagged('7 / 2 * 4')).ok, true);
});

test('checkCountdownExpression works on a bare expression', () => {
  assert.equal(checkCountdownExpression([4, 7, 8, 25], 100, '(8 - 7) * 25 * 4').ok, true);
  assert.equal(checkCountdownExpression([4, 7, 8, 25], 100, '(8 - 7) * 25 + 4').ok, false);
});

test('tokenizer: operator aliases map to the four operators', () => {
  const ops = tokenize('3×4÷2−1–1·2⋅1 x 1 X 1 \\times 1 \\cdot 1 \\div 1+1')
    .filter((t) => t.t === 'op')
    .map((t) => (t.t === 'op' ? t.op : ''));
  assert.deepEqual(ops, ['*', '/', '-', '-', '*', '*', '*', '*', '*', '*', '/', '+']);
  const node = parseExpression('2 + 3 * 4');
  assert.equal(node.kind, 'bin');
  assert.equal(node.kind === 'bin' ? node.op : '', '+'); // precedence: * binds tighter
  const left = parseExpression('8 - 4 - 2');
  assert.equal(left.kind === 'bin' && left.left.kind === 'bin' ? left.left.op : '', '-'); // left-associative
});

// ---- loading and prompt -----------------------------------------------------------------------

test('records: valid ones load, invalid ones name the field', () => {
  const good = parseJsonlText('{"nums": [44, 19, 35], "target": 98}\n', 'd.jsonl', toCountdownItem);
  assert.deepEqual(good.items, [{ id: 'L1', nums: [44, 19, 35], target: 98 }]);
  const cases: Array<[string, string]> = [
    ['{"nums": [1, 2.5], "target": 6}', 'expected "nums" to be an array of integers'],
    ['{"nums": "1,2", "target": 6}', 'expected "nums" to be an array of integers'],
    ['{"target": 6}', 'expected "nums" to be an array of integers'],
    ['{"nums": [1, -2], "target": 6}', 'expected "nums" to hold non-negative integers'],
    ['{"nums": [1], "target": 1}', 'expected "nums" to hold 2 to 8 numbers (got 1)'],
    ['{"nums": [1, 1234567890123456], "target": 1}', 'expected "nums" to hold numbers of at most 15 digits'],
    ['{"nums": [1, 2], "target": "3"}', 'expected "target" to be an integer'],
    ['{"nums": [1, 2], "target": 3.5}', 'expected "target" to be an integer'],
    ['[1, 2, 3]', 'expected a JSON object'],
  ];
  for (const [line, msg] of cases) {
    const text = `{"nums": [1, 2], "target": 3}\n\n${line}\n`;
    assert.throws(
      () => parseJsonlText(text, 'data.jsonl', toCountdownItem),
      (err: unknown) => err instanceof DataError && err.message === `data.jsonl:3: ${msg}`,
      line,
    );
  }
});

const dir = mkdtempSync(join(tmpdir(), 'rrr-countdown-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('countdownTask.load reads the public Countdown-Tasks layout and skips bad lines on request', async () => {
  const p = join(dir, 'cd.jsonl');
  writeFileSync(p, '{"target": 98, "nums": [44, 19, 35]}\n{"target": 64, "nums": [63, 95, 96]}\n{"nums": [1]}\n');
  await assert.rejects(countdownTask.load(p), { message: `${p}:3: expected "nums" to hold 2 to 8 numbers (got 1)` });
  const r = await countdownTask.load(p, { skipBadLines: true });
  assert.deepEqual(r.items.map((x) => x.target), [98, 64]);
  assert.deepEqual(r.skipped, [{ path: p, line: 3, message: 'expected "nums" to hold 2 to 8 numbers (got 1)' }]);
  // these two public instances are solvable, and the solver's answers verify
  for (const it of r.items) {
    const s = solveCountdown(it.nums, it.target);
    assert.notEqual(s, null);
    ok(it, tagged(s as string));
  }
});

test('prompt: one user message with the numbers, the target and the answer format', () => {
  const msgs = buildCountdownPrompt({ id: 'x', nums: [25, 7, 3, 50], target: 78 });
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0]?.role, 'user');
  const c = msgs[0]?.content ?? '';
  assert.ok(c.includes('[25, 7, 3, 50]'));
  assert.ok(c.includes('equals 78'));
  assert.ok(c.includes('<answer>') && c.includes('</answer>'));
  assert.deepEqual(countdownTask.buildPrompt({ id: 'x', nums: [25, 7, 3, 50], target: 78 }), msgs);
});

// ---- generator and solver ---------------------------------------------------------------

test('generator: same seed, same items; another seed, other items', () => {
  const a = generateCountdown(50, 123);
  const b = generateCountdown(50, 123);
  const c = generateCountdown(50, 124);
  assert.deepEqual(a, b);
  assert.notDeepEqual(
    a.map((x) => [x.nums, x.target]),
    c.map((x) => [x.nums, x.target]),
  );
  assert.deepEqual(generateCountdown(10, 123), a.slice(0, 10)); // a prefix does not depend on n
  assert.equal(new Set(a.map((x) => x.id)).size, 50);
  assert.equal(a[0]?.id, 'gen-123-0');
});

test('generator: every item is in range and solvable; its construction verifies under both rules', () => {
  const items = generateCountdown(300, 7);
  const counts = new Set<number>();
  for (const it of items) {
    counts.add(it.nums.length);
    assert.ok(it.nums.length >= 3 && it.nums.length <= 4);
    assert.ok(it.nums.every((x) => Number.isInteger(x) && x >= 1 && x <= 100));
    assert.ok(Number.isInteger(it.target) && it.target >= 1 && it.target <= 1000, `target ${it.target}`);
    ok(it, tagged(it.solution));
    ok(it, tagged(it.solution), { integerSteps: true });
  }
  assert.deepEqual([...counts].sort(), [3, 4]);
  for (const it of items.slice(0, 30)) assert.notEqual(solveCountdown(it.nums, it.target, { integerSteps: true }), null);
});

test('generator options: custom ranges, fractional construction, validation, impossible settings', () => {
  const small = generateCountdown(100, 1, { minCount: 2, maxCount: 2, minNum: 1, maxNum: 10, minTarget: 1, maxTarget: 20 });
  for (const it of small) {
    assert.equal(it.nums.length, 2);
    assert.ok(it.nums.every((x) => x >= 1 && x <= 10));
    assert.ok(it.target >= 1 && it.target <= 20);
    ok(it, tagged(it.solution));
  }
  for (const it of generateCountdown(200, 5, { integerSteps: false, minTarget: -1000 })) ok(it, tagged(it.solution));
  assert.throws(() => generateCountdown(1, 1, { maxCount: 7 }), /maxCount must be an integer in \[3, 6\] \(got 7\)/);
  assert.throws(() => generateCountdown(1, 1, { minNum: 10, maxNum: 5 }), /maxNum/);
  assert.throws(() => generateCountdown(-1, 1), /count must be a non-negative integer/);
  assert.throws(
    () => generateCountdown(1, 1, { minCount: 2, maxCount: 2, minNum: 1, maxNum: 1, minTarget: 500, maxTarget: 600, maxTries: 50 }),
    /could not generate a countdown instance in 50 tries/,
  );
  assert.deepEqual(countdownTask.generate?.(3, 9), generateCountdown(3, 9));
});

test('solver: finds verified solutions, returns null when there is none', () => {
  const s = solveCountdown([4, 7, 8, 25], 100);
  assert.notEqual(s, null);
  ok(A, tagged(s as string));
  assert.equal(solveCountdown([1, 1], 5), null);
  // 8 / (3 - 8 / 3) = 24 is the only way, and it needs a fraction on the way
  const frac = solveCountdown([3, 3, 8, 8], 24);
  assert.notEqual(frac, null);
  ok({ nums: [3, 3, 8, 8], target: 24 }, tagged(frac as string));
  assert.equal(solveCountdown([3, 3, 8, 8], 24, { integerSteps: true }), null);
  assert.throws(() => solveCountdown([1, 2, 3, 4, 5, 6, 7], 1), /1 to 6 numbers/);
});

// Flag values as typed, before yargs turns them into NaN, 0, a default or an empty string.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkFlagTexts } from '../src/cli/flag-texts.js';

const kinds = { number: ['lr', 'steps', 'max-answer-tokens', 'parallel'], string: ['model', 'out'], choices: { device: ['auto', 'cpu'] }, array: ['parallel'], boolean: ['json'] };
const check = (...argv: string[]) => () => checkFlagTexts(['train', ...argv], kinds);

test('values as typed pass', () => {
  for (const argv of [
    ['--lr', '5e-3', '--steps=3', '--model', 'm.gguf', '--out=x', '--device', 'cpu'],
    ['--lr', '-1'], // a range check says why, with the number
    ['--json', '--no-json', '--resume'], // not value flags
    ['--model', 'm.gguf', '--'],
    ['--parallel', '1', '--parallel=16'], // a list flag may repeat
    ['--json', '--json'],
    ['--json=true', '--json=false', '--steps=-1e1', '--out=-dir', '--lr', '-.5'],
  ]) assert.doesNotThrow(check(...argv), argv.join(' '));
});

test('a value that is not one is refused, naming the flag and the text', () => {
  const cases: [string[], RegExp][] = [
    [['--lr', 'abc'], /^--lr: expected a number, got 'abc'$/],
    [['--steps=1x'], /^--steps: expected a number, got '1x'$/],
    [['--lr='], /^--lr: expected a number, got an empty one$/],
    [['--lr', ' '], /^--lr: expected a number, got an empty one$/],
    [['--steps', '2', '--lr'], /^--lr: expected a number after it$/],
    [['--lr', '--steps', '2'], /^--lr: expected a number after it$/],
    [['--model'], /^--model: expected a value after it$/],
    [['--out='], /^--out: expected a value, got an empty one$/],
    [['--device', '--lr', '1'], /^--device: expected a value after it$/],
    [['--no-lr'], /^--no-lr: --lr takes a value, not a negation$/],
    [['--no-model'], /^--no-model: --model takes a value, not a negation$/],
    [['--maxAnswerTokens', 'abc'], /^--max-answer-tokens: expected a number, got 'abc'$/],
    [['--lr', '1e-3', '--steps', '2', '--lr=2e-3'], /^--lr: given 2 times \(1e-3, 2e-3\); give it once$/],
    [['--lr', '-1e-3'], /^--lr: '-1e-3' would be read as short flags; write --lr=-1e-3$/],
    [['--out', '-dir'], /^--out: '-dir' would be read as short flags; write --out=-dir$/],
    [['--json=yes'], /^--json: a switch; give it alone, or =true or =false \(got 'yes'\)$/],
    [['--json='], /^--json: a switch; give it alone, or =true or =false \(got ''\)$/],
    [['--out', 'x', '--', 'extra'], /^'extra': nothing is read after '--'; give flags before it$/],
    [['--model', 'a.gguf', '--model', 'b.gguf'], /^--model: given 2 times \(a\.gguf, b\.gguf\); give it once$/],
  ];
  for (const [argv, message] of cases) assert.throws(check(...argv), (e: Error) => message.test(e.message), argv.join(' '));
});

// The progress bar off a terminal (CI logs): one line a tenth, rates of this process's work only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Progress } from '../src/cli/progress.js';

function capture() {
  const lines: string[] = [];
  const stream = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
  return { lines, stream };
}

test('a resumed phase starts where it was and a halted one ends short of its total', () => {
  const { lines, stream } = capture();
  const p = new Progress('first attempts', 100, { unit: 'task', stream, from: 40 });
  p.update(45);
  p.update(55);
  p.halt('stopped');
  assert.equal(lines.length, 3, lines.join(''));
  assert.match(lines[0]!, /^first attempts  45% 45\/100 /);
  assert.match(lines[2]!, /^first attempts  55% 55\/100 .* in .*  stopped\n$/);
  p.finish();
  assert.equal(lines.length, 3, 'a halted bar stays ended');
});

test('finish shows the whole total', () => {
  const { lines, stream } = capture();
  const p = new Progress('eval', 10, { stream });
  p.update(3);
  p.finish('done');
  assert.match(lines.at(-1)!, /^eval 100% 10\/10 .*  done\n$/);
});

test('a transient bar shows only on a terminal and is wiped at the end', () => {
  const off = capture();
  const p = new Progress('prompt lengths', 10, { stream: off.stream, transient: true });
  p.update(5);
  p.clear();
  assert.deepEqual(off.lines, []);
  const on = capture();
  (on.stream as unknown as { isTTY: boolean }).isTTY = true;
  const q = new Progress('prompt lengths', 10, { stream: on.stream, transient: true });
  q.update(5);
  q.clear();
  q.update(7);
  assert.equal(on.lines.length, 2, JSON.stringify(on.lines));
  assert.match(on.lines[0]!, /^\r\x1b\[2Kprompt lengths .* 50% /);
  assert.equal(on.lines[1], '\r\x1b[2K');
});

test('before anything is done the ETA is unknown, and the status text shows on a terminal', () => {
  const on = capture();
  (on.stream as unknown as { isTTY: boolean }).isTTY = true;
  const p = new Progress('base', 64, { unit: 'task', stream: on.stream });
  p.update(0, '32 tokens into this batch');
  assert.match(on.lines.at(-1)!, /0\/64 0\.00 task\/s ETA \?  32 tokens into this batch$/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/util/rng.js';
import { Rational } from '../src/util/rational.js';
import { appendFileOrFail, WriteError, writeFileAtomic } from '../src/util/atomic.js';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('Rng: same seed gives the same stream, different seeds differ', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const sa = Array.from({ length: 20 }, () => a.nextU32());
  const sb = Array.from({ length: 20 }, () => b.nextU32());
  const sc = Array.from({ length: 20 }, () => c.nextU32());
  assert.deepEqual(sa, sb);
  assert.notDeepEqual(sa, sc);
  assert.ok(sa.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff));
  assert.ok(new Set(sa).size > 15);
});

test('Rng: state can be saved and restored exactly', () => {
  const r = new Rng(7);
  r.nextU32();
  const saved = r.state;
  const next = [r.nextU32(), r.nextU32(), r.next()];
  const r2 = new Rng(0);
  r2.state = saved;
  assert.deepEqual([r2.nextU32(), r2.nextU32(), r2.next()], next);
  assert.throws(() => {
    r2.state = -1;
  }, /uint32/);
});

test('Rng.int covers both ends of the range and nothing outside', () => {
  const r = new Rng(1);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const x = r.int(3, 7);
    assert.ok(x >= 3 && x <= 7, `out of range: ${x}`);
    seen.add(x);
  }
  assert.deepEqual([...seen].sort(), [3, 4, 5, 6, 7]);
  assert.equal(r.int(5, 5), 5);
  assert.throws(() => r.int(5, 4), /invalid integer range/);
  assert.throws(() => new Rng(1.5), /seed must be an integer/);
});

test('Rng.next is in [0, 1); shuffle is a permutation; pick throws on empty', () => {
  const r = new Rng(99);
  for (let i = 0; i < 1000; i++) {
    const x = r.next();
    assert.ok(x >= 0 && x < 1);
  }
  const arr = [1, 2, 3, 4, 5, 6, 7, 8];
  const shuffled = r.shuffle([...arr]);
  assert.deepEqual([...shuffled].sort((x, y) => x - y), arr);
  assert.throws(() => r.pick([]), /empty/);
});

test('Rational: lowest terms, sign in the numerator, exact arithmetic', () => {
  const a = Rational.of(6n, -4n);
  assert.equal(a.num, -3n);
  assert.equal(a.den, 2n);
  assert.equal(a.toString(), '-3/2');
  const third = Rational.of(1n, 3n);
  assert.ok(third.add(third).add(third).equals(Rational.of(1)));
  assert.ok(Rational.of(1).div(Rational.of(49)).mul(Rational.of(49)).equals(Rational.of(1)));
  assert.equal(Rational.of(7).sub(Rational.of(9)).toString(), '-2');
  assert.equal(Rational.of(1n, 2n).compare(Rational.of(2n, 3n)), -1);
  assert.throws(() => Rational.of(1).div(Rational.ZERO), /division by zero/);
  assert.throws(() => Rational.of(1n, 0n), /zero denominator/);
  assert.ok(Rational.of(4n, 2n).isInteger());
  assert.ok(!Rational.of(3n, 2n).isInteger());
});

test('writeFileAtomic: a file it cannot write is one line naming it and why, and nothing is left', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rrr-atomic-'));
  try {
    const blocker = join(dir, 'a-file');
    writeFileSync(blocker, 'x');
    // A folder on its path is a file: ENOTDIR whoever runs the test (root writes anywhere else).
    const path = join(blocker, 'out.json');
    assert.throws(() => writeFileAtomic(path, '{}'), (e: unknown) => e instanceof WriteError && e.message === `${path}: cannot write (a part of its path is a file, not a folder)`);
    assert.throws(() => appendFileOrFail(path, 'x\n'), (e: unknown) => e instanceof WriteError && e.message === `${path}: cannot write (a part of its path is a file, not a folder)`);
    writeFileAtomic(join(dir, 'ok.json'), '{}');
    assert.deepEqual(readdirSync(dir).sort(), ['a-file', 'ok.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

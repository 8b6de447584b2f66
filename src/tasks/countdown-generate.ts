/**
 * Countdown instances that are solvable by construction, and a small exact
 * solver.
 *
 * Generation: draw k numbers, then repeatedly take two random entries of the
 * pool and combine them with a random operator until one value is left; that
 * value is the target and the combination is a known solution. An instance is
 * rejected and redrawn when the target is not an integer or lies outside
 * [minTarget, maxTarget]. With `integerSteps` (default) every intermediate
 * result must also be a positive integer (no fractions, no zero or negative
 * values on the way), which matches the classic game and keeps the puzzles
 * human-checkable; with it off, any exact intermediate is allowed.
 */
import { Rng } from '../util/rng.js';
import { Rational } from '../util/rational.js';

export interface CountdownGenOptions {
  /** Fewest numbers per instance (default 3). */
  minCount?: number;
  /** Most numbers per instance (default 4, at most 6). */
  maxCount?: number;
  /** Smallest number that can be drawn (default 1). */
  minNum?: number;
  /** Largest number that can be drawn (default 100). */
  maxNum?: number;
  /** Smallest accepted target (default 1). */
  minTarget?: number;
  /** Largest accepted target (default 1000). */
  maxTarget?: number;
  /** Intermediate results must be positive integers (default true). */
  integerSteps?: boolean;
  /** Redraws allowed per instance before giving up (default 10000). */
  maxTries?: number;
}

export interface GeneratedCountdown {
  id: string;
  nums: number[];
  target: number;
  /** One expression that reaches the target (for tests and debugging, never shown to the model). */
  solution: string;
}

const MAX_GEN_COUNT = 6;

type Resolved = Required<CountdownGenOptions>;

function resolveOptions(o: CountdownGenOptions): Resolved {
  const r: Resolved = {
    minCount: o.minCount ?? 3,
    maxCount: o.maxCount ?? 4,
    minNum: o.minNum ?? 1,
    maxNum: o.maxNum ?? 100,
    minTarget: o.minTarget ?? 1,
    maxTarget: o.maxTarget ?? 1000,
    integerSteps: o.integerSteps ?? true,
    maxTries: o.maxTries ?? 10_000,
  };
  const int = (name: keyof Resolved, v: number, lo: number, hi = Number.MAX_SAFE_INTEGER): void => {
    if (!Number.isSafeInteger(v) || v < lo || v > hi) {
      throw new RangeError(`countdown option ${name} must be an integer in [${lo}, ${hi}] (got ${v})`);
    }
  };
  int('minCount', r.minCount, 2, MAX_GEN_COUNT);
  int('maxCount', r.maxCount, r.minCount, MAX_GEN_COUNT);
  int('minNum', r.minNum, 0, 1_000_000);
  int('maxNum', r.maxNum, r.minNum, 1_000_000);
  int('minTarget', r.minTarget, -Number.MAX_SAFE_INTEGER);
  int('maxTarget', r.maxTarget, r.minTarget);
  int('maxTries', r.maxTries, 1);
  return r;
}

/** A pool entry: an exact value and the text of the expression that produced it. */
interface Term {
  value: Rational;
  text: string;
  /** 3 = atom, 2 = product/quotient, 1 = sum/difference. */
  prec: number;
}

const paren = (t: Term, need: boolean): string => (need ? `(${t.text})` : t.text);

/** Renders `a op b` with only the parentheses that exact arithmetic needs. */
function combine(op: '+' | '-' | '*' | '/', a: Term, b: Term, value: Rational): Term {
  switch (op) {
    case '+':
      return { value, text: `${a.text} + ${b.text}`, prec: 1 };
    case '-':
      return { value, text: `${a.text} - ${paren(b, b.prec === 1)}`, prec: 1 };
    case '*':
      return { value, text: `${paren(a, a.prec === 1)} * ${paren(b, b.prec === 1)}`, prec: 2 };
    case '/':
      return { value, text: `${paren(a, a.prec === 1)} / ${paren(b, b.prec < 3)}`, prec: 2 };
  }
}

/** Every way to combine a and b (both orders where it matters) whose value `allowed` accepts. */
function candidates(a: Term, b: Term, allowed: (v: Rational) => boolean): Term[] {
  const out: Term[] = [];
  const push = (op: '+' | '-' | '*' | '/', x: Term, y: Term, v: Rational): void => {
    if (allowed(v)) out.push(combine(op, x, y, v));
  };
  push('+', a, b, a.value.add(b.value));
  push('*', a, b, a.value.mul(b.value));
  push('-', a, b, a.value.sub(b.value));
  push('-', b, a, b.value.sub(a.value));
  if (!b.value.isZero()) push('/', a, b, a.value.div(b.value));
  if (!a.value.isZero()) push('/', b, a, b.value.div(a.value));
  return out;
}

/** The generator's rule: under integerSteps every intermediate value is a positive integer. */
const generatorAllows = (integerSteps: boolean) => (v: Rational): boolean => !integerSteps || (v.isInteger() && v.num > 0n);
/** The solver, unlike the generator, allows zero and negative integers under integerSteps. */
const solverAllows = (integerSteps: boolean) => (v: Rational): boolean => !integerSteps || v.isInteger();

export function generateCountdown(n: number, seed: number, opts: CountdownGenOptions = {}): GeneratedCountdown[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`count must be a non-negative integer (got ${n})`);
  const o = resolveOptions(opts);
  const rng = new Rng(seed);
  const items: GeneratedCountdown[] = [];
  for (let k = 0; k < n; k++) {
    const item = generateOne(rng, o);
    if (item === null) {
      throw new RangeError(
        `could not generate a countdown instance in ${o.maxTries} tries; widen the target range ` +
          `[${o.minTarget}, ${o.maxTarget}] or the number range [${o.minNum}, ${o.maxNum}]`,
      );
    }
    items.push({ id: `gen-${seed}-${k}`, ...item });
  }
  return items;
}

function generateOne(rng: Rng, o: Resolved): Omit<GeneratedCountdown, 'id'> | null {
  const lo = BigInt(o.minTarget);
  const hi = BigInt(o.maxTarget);
  for (let attempt = 0; attempt < o.maxTries; attempt++) {
    const count = rng.int(o.minCount, o.maxCount);
    const nums: number[] = [];
    for (let i = 0; i < count; i++) nums.push(rng.int(o.minNum, o.maxNum));
    const pool: Term[] = nums.map((x) => ({ value: Rational.of(x), text: String(x), prec: 3 }));
    let dead = false;
    while (pool.length > 1) {
      const i = rng.int(0, pool.length - 1);
      let j = rng.int(0, pool.length - 2);
      if (j >= i) j++;
      const a = pool[i] as Term;
      const b = pool[j] as Term;
      const options = candidates(a, b, generatorAllows(o.integerSteps));
      if (options.length === 0) {
        dead = true; // only reachable with zeros drawn under integerSteps
        break;
      }
      const next = rng.pick(options);
      pool.splice(Math.max(i, j), 1);
      pool.splice(Math.min(i, j), 1);
      pool.push(next);
    }
    if (dead) continue;
    const result = pool[0] as Term;
    const v = result.value;
    if (!v.isInteger() || v.num < lo || v.num > hi) continue;
    return { nums, target: Number(v.num), solution: result.text };
  }
  return null;
}

/**
 * Finds an expression using every number exactly once that equals the target,
 * or null when there is none. Exhaustive over pairwise combinations (which
 * covers every binary expression tree), with memoisation of dead pools; meant
 * for up to 6 numbers.
 */
export function solveCountdown(
  nums: readonly number[],
  target: number,
  opts: { integerSteps?: boolean } = {},
): string | null {
  if (nums.length === 0 || nums.length > MAX_GEN_COUNT) {
    throw new RangeError(`solveCountdown takes 1 to ${MAX_GEN_COUNT} numbers (got ${nums.length})`);
  }
  const integerSteps = opts.integerSteps ?? false;
  const goal = Rational.of(target);
  const dead = new Set<string>();

  const search = (pool: Term[]): string | null => {
    if (pool.length === 1) {
      const only = pool[0] as Term;
      return only.value.equals(goal) ? only.text : null;
    }
    const key = pool
      .map((t) => t.value.toString())
      .sort()
      .join(',');
    if (dead.has(key)) return null;
    for (let i = 0; i < pool.length; i++) {
      for (let j = i + 1; j < pool.length; j++) {
        const rest = pool.filter((_, k) => k !== i && k !== j);
        const a = pool[i] as Term;
        const b = pool[j] as Term;
        for (const c of candidates(a, b, solverAllows(integerSteps))) {
          const found = search([...rest, c]);
          if (found !== null) return found;
        }
      }
    }
    dead.add(key);
    return null;
  };

  return search(nums.map((x) => ({ value: Rational.of(x), text: String(x), prec: 3 })));
}


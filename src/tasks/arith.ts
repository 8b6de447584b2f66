/**
 * Safe arithmetic for Countdown answers: a hand-written tokenizer and
 * recursive-descent parser over model output (no eval, no Function), and an
 * evaluator with exact rationals.
 *
 * Grammar (usual precedence, left-associative):
 *   expr   := term (('+' | '-') term)*
 *   term   := factor (('*' | '/') factor)*
 *   factor := INTEGER | '(' expr ')'
 *
 * Accepted spellings of the operators:
 *   +  : "+"
 *   -  : "-", "−" (U+2212 minus sign), "–" (U+2013 en dash)
 *   *  : "*", "×", "x", "X", "·", "⋅", "\times", "\cdot"
 *   /  : "/", "÷", "\div"
 * "x" is safe to read as multiplication because the grammar has no variables.
 *
 * Rejected, each with its own reason: unary minus/plus (every number must be a
 * given number combined by binary operators; "-3 + 5" is written "5 - 3"),
 * decimals, exponentiation ("^", "**"), any other character. Inputs longer than
 * MAX_EXPRESSION_LENGTH characters or nested deeper than MAX_DEPTH parentheses
 * are refused before any work that could grow with them.
 */
import { Rational } from '../util/rational.js';

export const MAX_EXPRESSION_LENGTH = 256;
export const MAX_DEPTH = 32;
export const MAX_DIGITS = 15;

export type Op = '+' | '-' | '*' | '/';

/** start/end: the node's span in the source (end exclusive), parentheses included. */
export type ExprNode =
  | { kind: 'num'; value: bigint; start: number; end: number }
  | { kind: 'bin'; op: Op; left: ExprNode; right: ExprNode; start: number; end: number };

/** Why an expression is not acceptable; the message is the human-readable reason. */
export class ArithError extends Error {
  override readonly name = 'ArithError';
}

type Token =
  | { t: 'num'; value: bigint; start: number; end: number }
  | { t: 'op'; op: Op; start: number; end: number }
  | { t: '(' | ')'; start: number; end: number };

const OP_ALIASES: ReadonlyArray<readonly [string, Op]> = [
  ['\\times', '*'],
  ['\\cdot', '*'],
  ['\\div', '/'],
  ['+', '+'],
  ['-', '-'],
  ['\u2212', '-'],
  ['\u2013', '-'],
  ['*', '*'],
  ['\u00d7', '*'],
  ['x', '*'],
  ['X', '*'],
  ['\u00b7', '*'],
  ['\u22c5', '*'],
  ['/', '/'],
  ['\u00f7', '/'],
];

/** 1-based column for messages. */
function col(i: number): number {
  return i + 1;
}

export function tokenize(src: string): Token[] {
  if (src.length > MAX_EXPRESSION_LENGTH) {
    throw new ArithError(
      `expression is too long (${src.length} characters, limit ${MAX_EXPRESSION_LENGTH})`,
    );
  }
  const out: Token[] = [];
  let i = 0;
  outer: while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c >= '0' && c <= '9') {
      let j = i;
      while (j < src.length && (src[j] as string) >= '0' && (src[j] as string) <= '9') j++;
      if (src[j] === '.' && /[0-9]/.test(src[j + 1] ?? '')) {
        throw new ArithError(`decimal numbers are not allowed (at position ${col(i)})`);
      }
      if (j - i > MAX_DIGITS) {
        throw new ArithError(`number too long at position ${col(i)}`);
      }
      out.push({ t: 'num', value: BigInt(src.slice(i, j)), start: i, end: j });
      i = j;
      continue;
    }
    if (c === '(' || c === ')') {
      out.push({ t: c, start: i, end: i + 1 });
      i++;
      continue;
    }
    if (c === '^' || src.startsWith('**', i)) {
      throw new ArithError(`exponentiation is not allowed (at position ${col(i)})`);
    }
    for (const [spelling, op] of OP_ALIASES) {
      if (src.startsWith(spelling, i)) {
        out.push({ t: 'op', op, start: i, end: i + spelling.length });
        i += spelling.length;
        continue outer;
      }
    }
    throw new ArithError(`unexpected character '${c}' at position ${col(i)}`);
  }
  return out;
}

/** Parses one whole expression; throws ArithError with the reason on any problem. */
export function parseExpression(src: string): ExprNode {
  const toks = tokenize(src);
  if (toks.length === 0) throw new ArithError('empty expression');
  let pos = 0;
  let depth = 0;

  const peek = (): Token | undefined => toks[pos];

  function parseExpr(): ExprNode {
    let left = parseTerm();
    for (let t = peek(); t?.t === 'op' && (t.op === '+' || t.op === '-'); t = peek()) {
      pos++;
      const right = parseTerm();
      left = { kind: 'bin', op: t.op, left, right, start: left.start, end: right.end };
    }
    return left;
  }

  function parseTerm(): ExprNode {
    let left = parseFactor();
    for (let t = peek(); t?.t === 'op' && (t.op === '*' || t.op === '/'); t = peek()) {
      pos++;
      const right = parseFactor();
      left = { kind: 'bin', op: t.op, left, right, start: left.start, end: right.end };
    }
    return left;
  }

  function parseFactor(): ExprNode {
    const t = peek();
    if (t === undefined) throw new ArithError('unexpected end of expression');
    if (t.t === 'num') {
      pos++;
      return { kind: 'num', value: t.value, start: t.start, end: t.end };
    }
    if (t.t === '(') {
      if (++depth > MAX_DEPTH) {
        throw new ArithError(`parentheses nested too deeply (limit ${MAX_DEPTH})`);
      }
      pos++;
      const inner = parseExpr();
      const close = peek();
      if (close?.t !== ')') {
        throw new ArithError(
          close === undefined
            ? `missing ')' for '(' at position ${col(t.start)}`
            : `expected ')' at position ${col(close.start)}`,
        );
      }
      pos++;
      depth--;
      return { ...inner, start: t.start, end: close.end };
    }
    if (t.t === 'op' && (t.op === '-' || t.op === '+')) {
      throw new ArithError(`unary ${t.op === '-' ? 'minus' : 'plus'} is not allowed (at position ${col(t.start)})`);
    }
    if (t.t === ')') throw new ArithError(`unexpected ')' at position ${col(t.start)}`);
    throw new ArithError(`expected a number at position ${col(t.start)}`);
  }

  const node = parseExpr();
  const rest = peek();
  if (rest !== undefined) {
    if (rest.t === ')') throw new ArithError(`unexpected ')' at position ${col(rest.start)}`);
    throw new ArithError(`expected an operator at position ${col(rest.start)}`);
  }
  return node;
}

/** The integer literals of the expression, in source order. */
export function numbersIn(node: ExprNode): bigint[] {
  const out: bigint[] = [];
  const walk = (n: ExprNode): void => {
    if (n.kind === 'num') out.push(n.value);
    else {
      walk(n.left);
      walk(n.right);
    }
  };
  walk(node);
  return out;
}

export interface EvalOptions {
  /** Fail when any intermediate result is not an integer (classic Countdown rules). Default false. */
  integerSteps?: boolean;
}

/**
 * Evaluates exactly. `src` is the text the node was parsed from; it is used
 * only to quote the offending sub-expression in error reasons.
 */
export function evaluate(node: ExprNode, src: string, opts: EvalOptions = {}): Rational {
  const quote = (n: ExprNode): string => src.slice(n.start, n.end).trim();
  const walk = (n: ExprNode): Rational => {
    if (n.kind === 'num') return Rational.of(n.value);
    const a = walk(n.left);
    const b = walk(n.right);
    let r: Rational;
    switch (n.op) {
      case '+':
        r = a.add(b);
        break;
      case '-':
        r = a.sub(b);
        break;
      case '*':
        r = a.mul(b);
        break;
      case '/':
        if (b.isZero()) throw new ArithError(`division by zero in ${quote(n)}`);
        r = a.div(b);
        break;
    }
    if (opts.integerSteps && !r.isInteger()) {
      throw new ArithError(`${quote(n)} = ${r} is not an integer`);
    }
    return r;
  };
  return walk(node);
}

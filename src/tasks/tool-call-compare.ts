/**
 * Compares the calls a model made with the reference calls.
 *
 * Rules:
 *   - the calls form a multiset: order does not matter, the count must match,
 *     and a call repeated in the reference must be repeated in the answer;
 *   - names must be equal (after trimming; case-sensitive);
 *   - argument keys must be the same set: a missing or an extra argument fails,
 *     even one whose value equals a default (the reference is the spec); a key
 *     present with value null is present;
 *   - values are compared after normalisation:
 *       strings   trimmed, Unicode NFC (a composed "ü" = "u" + combining
 *                 diaeresis), case-sensitive ("Paris" ≠ "paris");
 *       numbers   by value (5 and 5.0 are the same JSON number);
 *       arrays    order-sensitive, element by element;
 *       objects   deep, keys as a set;
 *     and, with `lenientTypes` (default on), across types:
 *       a numeric string equals that number ("5" = 5, "2.50" = 2.5), unless it
 *       has a leading zero ("007", "02139": identifiers, kept as strings) or
 *       more significant digits than a double holds (15): such a numeral is an
 *       id ("7213135398283792645", as xLAM's video and user ids), and read as a
 *       number it would equal numerals that differ in their last digits;
 *       "true"/"false" (any case) equal the booleans.
 *     Small models quote numbers and booleans often, and the value is what the
 *     tool receives after the usual coercion; the reward is about choosing the
 *     right call and values, not about JSON typing. Set lenientTypes: false to
 *     require exact JSON types.
 */
import type { VerifyResult } from './types.js';
import type { ToolCall } from './tool-call-parse.js';

export interface CompareOptions {
  lenientTypes?: boolean;
}

const NUMERIC = /^[+-]?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$|^[+-]?0?\.\d+(?:[eE][+-]?\d+)?$/;

/**
 * A string that is equal for two values exactly when they are equal under the
 * rules above; it maps each value to one canonical form, so equality is an
 * equivalence and greedy multiset matching is exact.
 */
export function canonicalKey(v: unknown, lenient = true): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return `b:${v}`;
  if (typeof v === 'number') return `n:${Object.is(v, -0) ? 0 : v}`;
  if (typeof v === 'string') {
    const s = v.trim().normalize('NFC');
    if (lenient) {
      if (NUMERIC.test(s) && exactAsNumber(s)) return `n:${Number(s)}`;
      if (/^(true|false)$/i.test(s)) return `b:${s.toLowerCase()}`;
    }
    return `s:${JSON.stringify(s)}`;
  }
  if (Array.isArray(v)) return `[${v.map((x) => canonicalKey(x, lenient)).join(',')}]`;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalKey(o[k], lenient)}`).join(',')}}`;
  }
  return `?:${String(v)}`;
}

/**
 * Whether a numeral's double is it: at most 15 significant digits (every such decimal has a double
 * of its own) and no overflow to Infinity or underflow to 0.
 */
function exactAsNumber(numeral: string): boolean {
  const digits = numeral.replace(/[eE].*$/, '').replace(/\D/g, '').replace(/^0+/, '').replace(/0+$/, '');
  const n = Number(numeral);
  return digits.length <= 15 && Number.isFinite(n) && (n !== 0 || digits === '');
}

function callKey(c: ToolCall, lenient: boolean): string {
  return `${c.name.trim()}(${canonicalKey(c.arguments, lenient)})`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function show(v: unknown): string {
  const s = v === undefined ? 'nothing' : JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 59)}…` : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The first difference between two argument values, as a short reason; null when equal. */
export function describeDifference(expected: unknown, actual: unknown, lenient = true, path = ''): string | null {
  if (canonicalKey(expected, lenient) === canonicalKey(actual, lenient)) return null;
  const label = (p: string): string => `argument "${p}"`;
  if (isPlainObject(expected) && isPlainObject(actual)) {
    const join = (k: string): string => (path === '' ? k : `${path}.${k}`);
    for (const k of Object.keys(expected)) {
      if (!(k in actual)) return `missing ${label(join(k))}`;
    }
    for (const k of Object.keys(actual)) {
      if (!(k in expected)) return `unexpected ${label(join(k))}`;
    }
    for (const k of Object.keys(expected)) {
      const d = describeDifference(expected[k], actual[k], lenient, join(k));
      if (d !== null) return d;
    }
    return null;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    if (expected.length !== actual.length) {
      return `${label(path)}: expected ${plural(expected.length, 'item')}, got ${actual.length}`;
    }
    for (let i = 0; i < expected.length; i++) {
      const d = describeDifference(expected[i], actual[i], lenient, `${path}[${i}]`);
      if (d !== null) return d;
    }
    return null;
  }
  return `${label(path)}: expected ${show(expected)}, got ${show(actual)}`;
}

export function compareToolCalls(
  expected: readonly ToolCall[],
  actual: readonly ToolCall[],
  opts: CompareOptions = {},
): VerifyResult {
  const lenient = opts.lenientTypes ?? true;
  const used = new Array<boolean>(actual.length).fill(false);
  const actualKeys = actual.map((c) => callKey(c, lenient));
  const unmatched: ToolCall[] = [];
  for (const e of expected) {
    const k = callKey(e, lenient);
    const j = actualKeys.findIndex((a, idx) => !used[idx] && a === k);
    if (j >= 0) used[j] = true;
    else unmatched.push(e);
  }
  const extra = actual.filter((_, idx) => !used[idx]);

  if (unmatched.length === 0 && extra.length === 0) {
    return { ok: true, reason: `${plural(expected.length, 'call')} matched` };
  }
  if (expected.length !== actual.length) {
    const parts = [`expected ${plural(expected.length, 'call')}, got ${actual.length}`];
    if (unmatched.length > 0) parts.push(`unmatched: ${unmatched.map((c) => c.name).join(', ')}`);
    if (extra.length > 0) parts.push(`extra: ${extra.map((c) => c.name).join(', ')}`);
    return { ok: false, reason: parts.join('; ') };
  }
  // Same count, so at least one reference call has no equal: explain the first.
  const e = unmatched[0] as ToolCall;
  const sameName = extra.find((c) => c.name.trim() === e.name.trim());
  if (sameName === undefined) {
    return {
      ok: false,
      reason: `expected a call to ${e.name}, got ${extra.map((c) => c.name).join(', ')}`,
    };
  }
  const d = describeDifference(e.arguments, sameName.arguments, lenient) ?? 'arguments differ';
  return { ok: false, reason: `${e.name}: ${d}` };
}

/**
 * Tolerant extraction of tool calls from a model's answer. Small models (and
 * different chat templates) write calls in many shapes; all of these are read:
 *
 *   - a JSON array of calls, or a single call object, bare or inside ``` / ```json fences
 *     (every JSON value in the text is considered, so calls split over several
 *     fences or lines all count);
 *   - Qwen / Hermes tags: <tool_call>{...}</tool_call>, possibly several; when
 *     tags are present only their contents count (an unclosed last tag runs to
 *     the end of the text);
 *   - call objects {"name": …, "arguments": {…}}, Llama-3 style
 *     {"name": …, "parameters": {…}} ("parameters" is read as "arguments"),
 *     OpenAI style {"type": "function", "function": {"name": …, "arguments": …}},
 *     and a wrapper {"tool_calls": [...]};
 *   - arguments given as a JSON string (parsed once more).
 * Anything before a closing </think> is ignored (reasoning drafts).
 *
 * Not accepted: Python-style calls (get_weather(city="Paris")), single-quoted
 * or otherwise non-JSON dictionaries.
 *
 * Outside tags, a JSON object counts as a call only if it has a string "name"
 * and either "arguments"/"parameters" or no other keys, so JSON in prose such
 * as {"name": "Ann", "age": 3} is not mistaken for a call.
 */

export interface ToolCall {
  name: string;
  arguments: Record<string, unknown>;
}

export type ParseResult = { ok: true; calls: ToolCall[] } | { ok: false; error: string };

/** Answers longer than this are refused rather than scanned (the scan is quadratic at worst). */
export const MAX_ANSWER_CHARS = 32_000;
const SCAN_BUDGET = 4_000_000;

export function parseToolCalls(text: string): ParseResult {
  const thinkEnd = text.lastIndexOf('</think>');
  const body = thinkEnd >= 0 ? text.slice(thinkEnd + '</think>'.length) : text;
  if (body.length > MAX_ANSWER_CHARS) {
    return { ok: false, error: `answer is too long (${body.length} characters, limit ${MAX_ANSWER_CHARS})` };
  }

  const tagged = [...body.matchAll(/<tool_call>([\s\S]*?)(?:<\/tool_call>|$)/g)];
  const calls: ToolCall[] = [];
  if (tagged.length > 0) {
    for (let k = 0; k < tagged.length; k++) {
      const values = extractJsonValues((tagged[k] as RegExpMatchArray)[1] ?? '');
      if (values.length === 0) {
        return { ok: false, error: `<tool_call> block ${k + 1} does not hold valid JSON` };
      }
      for (const v of flatten(values)) {
        const r = toCall(v, true);
        if (typeof r === 'string') return { ok: false, error: `<tool_call> block ${k + 1}: ${r}` };
        if (r !== null) calls.push(r);
      }
    }
    return { ok: true, calls };
  }

  for (const v of flatten(extractJsonValues(body))) {
    const r = toCall(v, false);
    if (typeof r === 'string') return { ok: false, error: r };
    if (r !== null) calls.push(r);
  }
  return { ok: true, calls };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Arrays and {"tool_calls": [...]} wrappers become their elements. */
function flatten(values: unknown[]): unknown[] {
  const out: unknown[] = [];
  const add = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(add);
    else if (isPlainObject(v) && Array.isArray(v['tool_calls'])) (v['tool_calls'] as unknown[]).forEach(add);
    else out.push(v);
  };
  values.forEach(add);
  return out;
}

/**
 * A call, null when the value is not call-shaped (ignored), or a string saying
 * why a call-shaped value is malformed. Inside tags every value must be a call.
 */
function toCall(v: unknown, strict: boolean): ToolCall | null | string {
  if (!isPlainObject(v)) return strict ? 'expected a JSON object with "name" and "arguments"' : null;
  let obj = v;
  if (isPlainObject(v['function'])) obj = v['function'];
  const name = obj['name'];
  if (typeof name !== 'string' || name.trim() === '') {
    return strict ? 'a tool call has no "name"' : null;
  }
  const hasArgs = 'arguments' in obj || 'parameters' in obj;
  if (!strict && !hasArgs && Object.keys(obj).some((k) => k !== 'name' && k !== 'type')) return null;

  let args: unknown = 'arguments' in obj ? obj['arguments'] : obj['parameters'];
  if (typeof args === 'string') {
    const s = args.trim();
    if (s === '') {
      args = {};
    } else {
      try {
        args = JSON.parse(s);
      } catch {
        return `the arguments of ${name} are a string that is not valid JSON`;
      }
    }
  }
  if (args === undefined || args === null) args = {};
  if (!isPlainObject(args)) return `the arguments of ${name} are not a JSON object`;
  return { name: name.trim(), arguments: args };
}

/**
 * Every JSON object or array embedded in free text, left to right, outermost
 * only. Candidate starts are "{" followed by a quote or "}", and "[" followed
 * by "{", "[" or "]" (what a call or a list of calls starts with); each is
 * bracket-matched (string-aware) and handed to JSON.parse. A failed candidate
 * is skipped one character on, so valid JSON nested in broken JSON is still found.
 */
export function extractJsonValues(text: string): unknown[] {
  const out: unknown[] = [];
  let budget = SCAN_BUDGET;
  let i = 0;
  while (i < text.length && budget > 0) {
    const c = text[i];
    if ((c === '{' || c === '[') && plausibleStart(text, i)) {
      const end = matchBracket(text, i, (n) => (budget -= n) > 0);
      if (end > 0) {
        try {
          out.push(JSON.parse(text.slice(i, end)));
          i = end;
          continue;
        } catch {
          // not JSON after all; keep scanning inside it
        }
      }
    }
    i++;
  }
  return out;
}

function plausibleStart(text: string, i: number): boolean {
  let j = i + 1;
  while (j < text.length && /\s/.test(text[j] as string)) j++;
  const n = text[j];
  return text[i] === '{' ? n === '"' || n === '}' : n === '{' || n === '[' || n === ']';
}

/** Index just past the bracket closing the one at `start`, or -1. */
function matchBracket(text: string, start: number, spend: (n: number) => boolean): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return spend(i - start + 1) ? i + 1 : -1;
    }
  }
  spend(text.length - start);
  return -1;
}

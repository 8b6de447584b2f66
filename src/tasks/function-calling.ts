/**
 * Function calling on the APIGen / xLAM format. One record (a JSONL line, or
 * an element of a JSON array file as in the xLAM release):
 *
 *   {"id": 7, "query": "…",
 *    "tools":   "[{\"name\": …, \"description\": …, \"parameters\": {…}}, …]",
 *    "answers": "[{\"name\": …, \"arguments\": {…}}, …]"}
 *
 * "tools" and "answers" are JSON strings holding arrays (as released); already
 * decoded arrays are accepted too. "id" is optional (string or number).
 *
 * The first-attempt prompt writes the tool specs, as released, into the system
 * prompt and asks for a JSON array of calls: libllama's template engine does
 * not render tools. The parser (tool-call-parse.ts) also reads the native
 * tool-call forms models fall back to (<tool_call> tags, the OpenAI shape), and
 * the comparison rules are in tool-call-compare.ts.
 */
import { InvalidRecord, expectObject, oneLine, readJsonl, recordId } from './jsonl.js';
import { compareToolCalls, type CompareOptions } from './tool-call-compare.js';
import { parseToolCalls, type ToolCall } from './tool-call-parse.js';
import { FUNCTION_CALLING_REFLECTION_PROMPT } from './prompts.js';
import {
  type ChatMessage,
  type LoadOptions,
  type LoadResult,
  type Task,
  type VerifyResult,
} from './types.js';

export { parseToolCalls, type ToolCall, type ParseResult } from './tool-call-parse.js';
export { compareToolCalls, canonicalKey, describeDifference, type CompareOptions } from './tool-call-compare.js';

export interface XlamTool {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

export interface FunctionCallingItem {
  id: string;
  query: string;
  tools: XlamTool[];
  answers: ToolCall[];
}

export const FUNCTION_CALLING_RETRY_PROMPT = 'Try again. Answer with the tool calls only.';

// ---- loading --------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A field that holds a JSON-encoded array (or, tolerated, the array itself). */
function jsonArrayField(o: Record<string, unknown>, key: string, what: string): unknown[] {
  const raw = o[key];
  if (Array.isArray(raw)) return raw;
  if (typeof raw !== 'string') {
    throw new InvalidRecord(`expected "${key}" to be a JSON string holding an array of ${what}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new InvalidRecord(
      `"${key}" is not valid JSON (${oneLine(err instanceof Error ? err.message : String(err), 80)})`,
    );
  }
  if (!Array.isArray(parsed)) {
    throw new InvalidRecord(`expected "${key}" to hold a JSON array of ${what}`);
  }
  return parsed;
}

export function toFunctionCallingItem(value: unknown, line: number, nth?: number): FunctionCallingItem {
  const o = expectObject(value);
  const query = o['query'];
  if (typeof query !== 'string' || query.trim() === '') {
    throw new InvalidRecord('expected "query" to be a non-empty string');
  }

  const tools = jsonArrayField(o, 'tools', 'tool specs').map((t, i): XlamTool => {
    if (!isPlainObject(t) || typeof t['name'] !== 'string' || t['name'].trim() === '') {
      throw new InvalidRecord(`expected "tools"[${i}] to be an object with a string "name"`);
    }
    const d = t['description'];
    if (d !== undefined && typeof d !== 'string') {
      throw new InvalidRecord(`expected "tools"[${i}].description to be a string`);
    }
    const p = t['parameters'];
    if (p !== undefined && p !== null && !isPlainObject(p)) {
      throw new InvalidRecord(`expected "tools"[${i}].parameters to be an object`);
    }
    const tool: XlamTool = { name: t['name'] };
    if (d !== undefined) tool.description = d;
    if (isPlainObject(p)) tool.parameters = p;
    return tool;
  });
  const names = new Set(tools.map((t) => t.name));

  const answers = jsonArrayField(o, 'answers', 'calls').map((a, i): ToolCall => {
    if (!isPlainObject(a) || typeof a['name'] !== 'string' || a['name'].trim() === '') {
      throw new InvalidRecord(`expected "answers"[${i}] to be an object with a string "name"`);
    }
    let args = a['arguments'] ?? {};
    if (typeof args === 'string') {
      try {
        args = JSON.parse(args);
      } catch {
        throw new InvalidRecord(`"answers"[${i}].arguments is a string that is not valid JSON`);
      }
    }
    if (!isPlainObject(args)) {
      throw new InvalidRecord(`expected "answers"[${i}].arguments to be an object`);
    }
    if (!names.has(a['name'])) {
      throw new InvalidRecord(`"answers"[${i}] calls "${a['name']}", which is not in "tools"`);
    }
    return { name: a['name'], arguments: args };
  });

  return { id: recordId(o, line, nth), query, tools, answers };
}

export function loadFunctionCalling(
  path: string,
  opts: LoadOptions = {},
): Promise<LoadResult<FunctionCallingItem>> {
  return readJsonl(path, toFunctionCallingItem, { ...opts, allowJsonArray: true });
}

// ---- prompt -----------------------------------------------------------------------

function textSystem(tools: readonly XlamTool[]): string {
  return (
    'You are a helpful assistant with access to the functions listed below. Answer the user by ' +
    'calling the functions that the request needs, with the exact argument values it asks for.\n\n' +
    'Functions (one JSON object per line):\n' +
    tools.map((t) => JSON.stringify(t)).join('\n') +
    '\n\nRespond with the function calls only, as a JSON array:\n' +
    '[{"name": "function_name", "arguments": {"argument_name": value}}]\n' +
    'Write nothing else.'
  );
}

/** The first-attempt conversation: the tools in the system message, the query as the user's. */
export function buildFunctionCallingPrompt(item: FunctionCallingItem): ChatMessage[] {
  return [
    { role: 'system', content: textSystem(item.tools) },
    { role: 'user', content: item.query },
  ];
}

// ---- verification -----------------------------------------------------------------

export function verifyFunctionCalling(
  item: Pick<FunctionCallingItem, 'answers'>,
  answerText: string,
  opts: CompareOptions = {},
): VerifyResult {
  const parsed = parseToolCalls(answerText);
  if (!parsed.ok) return { ok: false, reason: parsed.error };
  if (parsed.calls.length === 0 && item.answers.length > 0) {
    return { ok: false, reason: 'no tool call found in the answer' };
  }
  return compareToolCalls(item.answers, parsed.calls, opts);
}

// ---- the task -----------------------------------------------------------------------

export function createFunctionCallingTask(opts: CompareOptions = {}): Task<FunctionCallingItem> {
  return {
    name: 'function-calling',
    reflectionPrompt: FUNCTION_CALLING_REFLECTION_PROMPT,
    retryPrompt: FUNCTION_CALLING_RETRY_PROMPT,
    buildPrompt: (item) => buildFunctionCallingPrompt(item),
    verify: (item, answerText) => verifyFunctionCalling(item, answerText, opts),
    load: (path, loadOpts) => loadFunctionCalling(path, loadOpts),
  };
}

export const functionCallingTask = createFunctionCallingTask();

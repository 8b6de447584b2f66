import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildFunctionCallingPrompt,
  canonicalKey,
  compareToolCalls,
  functionCallingTask,
  parseToolCalls,
  toFunctionCallingItem,
  verifyFunctionCalling,
  type FunctionCallingItem,
  type ToolCall,
} from '../src/tasks/function-calling.js';
import { DataError, parseJsonlText } from '../src/tasks/jsonl.js';

const weather: ToolCall = { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } };
const search: ToolCall = { name: 'search', arguments: { query: 'hotels', limit: 5 } };

function calls(text: string): ToolCall[] {
  const r = parseToolCalls(text);
  assert.ok(r.ok, `parse failed: ${r.ok ? '' : r.error}`);
  return r.calls;
}
function parseError(text: string): string {
  const r = parseToolCalls(text);
  assert.ok(!r.ok, 'expected a parse error');
  return r.error;
}

// ---- parsing ----------------------------------------------------------------------------

test('parse: bare JSON array and single object', () => {
  assert.deepEqual(calls('[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]'), [weather]);
  assert.deepEqual(calls('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'), [weather]);
  assert.deepEqual(calls('[]'), []);
});

test('parse: fenced JSON with prose around it', () => {
  const text = 'Sure! Here are the calls:\n```json\n[\n  {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},\n  {"name": "search", "arguments": {"query": "hotels", "limit": 5}}\n]\n```\nLet me know.';
  assert.deepEqual(calls(text), [weather, search]);
  assert.deepEqual(calls('```\n{"name": "search", "arguments": {"query": "hotels", "limit": 5}}\n```'), [search]);
});

test('parse: several <tool_call> blocks (Qwen / Hermes), an unclosed last one, JSON outside tags ignored', () => {
  const text =
    'I will call two tools. {"name": "noise", "arguments": {}}\n' +
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "search", "arguments": {"query": "hotels", "limit": 5}}';
  assert.deepEqual(calls(text), [weather, search]);
  assert.equal(parseError('<tool_call>not json</tool_call>'), '<tool_call> block 1 does not hold valid JSON');
  assert.equal(parseError('<tool_call>{"arguments": {}}</tool_call>'), '<tool_call> block 1: a tool call has no "name"');
});

test('parse: Llama-3 "parameters", OpenAI "function" wrapper, "tool_calls" wrapper', () => {
  assert.deepEqual(calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'), [weather]);
  assert.deepEqual(calls('{"type": "function", "name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'), [weather]);
  assert.deepEqual(
    calls('{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}}'),
    [weather],
  );
  assert.deepEqual(calls('{"tool_calls": [{"function": {"name": "search", "arguments": {"query": "hotels", "limit": 5}}}]}'), [search]);
});

test('parse: arguments as a JSON string are parsed again; a bad string is an error', () => {
  assert.deepEqual(calls('[{"name": "search", "arguments": "{\\"query\\": \\"hotels\\", \\"limit\\": 5}"}]'), [search]);
  assert.deepEqual(calls('{"name": "now", "arguments": ""}'), [{ name: 'now', arguments: {} }]);
  assert.equal(parseError('{"name": "search", "arguments": "{query: hotels}"}'), 'the arguments of search are a string that is not valid JSON');
  assert.equal(parseError('{"name": "search", "arguments": [1, 2]}'), 'the arguments of search are not a JSON object');
});

test('parse: reasoning before </think> is ignored; prose JSON is not a call; nothing found is an empty list', () => {
  assert.deepEqual(calls('<think>maybe [{"name": "search", "arguments": {}}]</think>\n[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]'), [weather]);
  assert.deepEqual(calls('The user {"name": "Ann", "age": 3} wants [1, 2] things.'), []);
  assert.deepEqual(calls('I cannot help with that.'), []);
  assert.deepEqual(calls('{"name": "now"}'), [{ name: 'now', arguments: {} }]);
  // broken outer JSON: the call inside is still found
  assert.deepEqual(calls('[{"name": "search", "arguments": {"query": "hotels", "limit": 5}},'), [search]);
});

test('parse: refuses absurdly long answers', () => {
  assert.match(parseError('{'.repeat(40_000)), /^answer is too long \(40000 characters, limit 32000\)$/);
  const t0 = Date.now();
  assert.deepEqual(calls('{"'.repeat(15_000)), []);
  assert.ok(Date.now() - t0 < 3000);
});

// ---- comparison ---------------------------------------------------------------------------

function cmp(expected: ToolCall[], actual: ToolCall[], opts = {}): ReturnType<typeof compareToolCalls> {
  return compareToolCalls(expected, actual, opts);
}

test('compare: equal calls match in any order; the count must match', () => {
  assert.deepEqual(cmp([weather, search], [search, weather]), { ok: true, reason: '2 calls matched' });
  assert.deepEqual(cmp([weather], [weather, search]), { ok: false, reason: 'expected 1 call, got 2; extra: search' });
  assert.deepEqual(cmp([weather, search], [search]), { ok: false, reason: 'expected 2 calls, got 1; unmatched: get_weather' });
  assert.deepEqual(cmp([weather], []), { ok: false, reason: 'expected 1 call, got 0; unmatched: get_weather' });
});

test('compare: repeated calls are a multiset', () => {
  const paris = weather;
  const rome: ToolCall = { name: 'get_weather', arguments: { city: 'Rome', unit: 'celsius' } };
  assert.equal(cmp([paris, rome], [rome, paris]).ok, true);
  assert.deepEqual(cmp([paris, rome], [paris, paris]), {
    ok: false,
    reason: 'get_weather: argument "city": expected "Rome", got "Paris"',
  });
  assert.equal(cmp([paris, paris], [paris, paris]).ok, true);
});

test('compare: wrong name, missing argument, extra argument, wrong value', () => {
  assert.deepEqual(cmp([weather], [{ name: 'get_forecast', arguments: weather.arguments }]), {
    ok: false,
    reason: 'expected a call to get_weather, got get_forecast',
  });
  assert.deepEqual(cmp([weather], [{ name: 'get_weather', arguments: { city: 'Paris' } }]), {
    ok: false,
    reason: 'get_weather: missing argument "unit"',
  });
  assert.deepEqual(cmp([weather], [{ name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius', days: 3 } }]), {
    ok: false,
    reason: 'get_weather: unexpected argument "days"',
  });
  assert.deepEqual(cmp([weather], [{ name: 'get_weather', arguments: { city: 'London', unit: 'celsius' } }]), {
    ok: false,
    reason: 'get_weather: argument "city": expected "Paris", got "London"',
  });
  // a null value is a present key, not a missing one
  assert.equal(cmp([{ name: 'f', arguments: { a: null } }], [{ name: 'f', arguments: {} }]).reason, 'f: missing argument "a"');
  assert.equal(cmp([{ name: 'f', arguments: { a: null } }], [{ name: 'f', arguments: { a: null } }]).ok, true);
});

test('compare: strings are trimmed but case-sensitive', () => {
  assert.equal(cmp([weather], [{ name: ' get_weather ', arguments: { city: '  Paris ', unit: 'celsius' } }]).ok, true);
  assert.equal(cmp([weather], [{ name: 'get_weather', arguments: { city: 'paris', unit: 'celsius' } }]).ok, false);
  assert.equal(cmp([weather], [{ name: 'Get_Weather', arguments: weather.arguments }]).ok, false);
});

test('compare: type variants under the lenient (default) rules', () => {
  const f = (v: unknown): ToolCall => ({ name: 'f', arguments: { v } });
  assert.equal(cmp([f(5)], [f(5.0)]).ok, true);
  assert.equal(cmp([f(5)], [f('5')]).ok, true);
  assert.equal(cmp([f(2.5)], [f(' 2.50 ')]).ok, true);
  assert.equal(cmp([f('5')], [f(5)]).ok, true);
  assert.equal(cmp([f(1e3)], [f('1000')]).ok, true);
  assert.equal(cmp([f(5)], [f(6)]).ok, false);
  assert.equal(cmp([f(5)], [f('5 apples')]).ok, false);
  assert.equal(cmp([f('007')], [f(7)]).ok, false); // leading zero: an identifier, not a number
  assert.equal(cmp([f('02139')], [f('02139')]).ok, true);
  assert.equal(cmp([f(true)], [f('true')]).ok, true);
  assert.equal(cmp([f(false)], [f('False')]).ok, true);
  assert.equal(cmp([f(true)], [f(1)]).ok, false);
  assert.equal(cmp([f(null)], [f('null')]).ok, false);
  assert.equal(cmp([f(0)], [f(false)]).ok, false);
  assert.equal(cmp([f('Z\u00fcrich')], [f('Zu\u0308rich')]).ok, true); // the same text, composed or not
  assert.equal(cmp([f('Z\u00fcrich')], [f('Zurich')]).ok, false);
});

test('compare: numerals longer than a double holds are ids, compared digit for digit', () => {
  const f = (v: unknown): ToolCall => ({ name: 'f', arguments: { aweme_id: v } });
  const id = '7213135398283792645'; // an xLAM video id: 19 digits
  assert.equal(cmp([f(id)], [f(id)]).ok, true);
  for (const wrong of ['7213135398283792600', '7213135398283792645.0', '7.213135398283792645e18', '7213135398283792646']) {
    assert.equal(cmp([f(id)], [f(wrong)]).ok, false, wrong);
  }
  // 15 significant digits still read as numbers; overflow and underflow are not numbers.
  assert.equal(cmp([f(123456789012345)], [f('123456789012345')]).ok, true);
  assert.equal(cmp([f('1e400')], [f('2e400')]).ok, false);
  assert.equal(cmp([f('1e-400')], [f(0)]).ok, false);
  assert.equal(cmp([f('100000000000000000000')], [f(1e20)]).ok, true); // one significant digit
});

test('compare: lenientTypes false requires exact JSON types', () => {
  const f = (v: unknown): ToolCall => ({ name: 'f', arguments: { v } });
  assert.equal(cmp([f(5)], [f(5.0)], { lenientTypes: false }).ok, true);
  assert.deepEqual(cmp([f(5)], [f('5')], { lenientTypes: false }), { ok: false, reason: 'f: argument "v": expected 5, got "5"' });
  assert.equal(cmp([f(true)], [f('true')], { lenientTypes: false }).ok, false);
  assert.equal(cmp([f(' x ')], [f('x')], { lenientTypes: false }).ok, true); // trimming still applies
});

test('compare: arrays are order-sensitive, objects deep and key-order-free', () => {
  const f = (v: unknown): ToolCall => ({ name: 'f', arguments: { v } });
  assert.equal(cmp([f([1, 2, 3])], [f([1, 2, 3])]).ok, true);
  assert.equal(cmp([f([1, 2, 3])], [f(['1', 2, '3'])]).ok, true);
  assert.deepEqual(cmp([f([1, 2, 3])], [f([3, 2, 1])]), { ok: false, reason: 'f: argument "v[0]": expected 1, got 3' });
  assert.deepEqual(cmp([f([1, 2, 3])], [f([1, 2])]), { ok: false, reason: 'f: argument "v": expected 3 items, got 2' });
  assert.equal(cmp([f({ a: 1, b: { c: 'x' } })], [f({ b: { c: 'x' }, a: 1 })]).ok, true);
  assert.deepEqual(cmp([f({ a: 1, b: { c: 'x' } })], [f({ a: 1, b: { c: 'y' } })]), {
    ok: false,
    reason: 'f: argument "v.b.c": expected "x", got "y"',
  });
  assert.deepEqual(cmp([f({ a: 1, b: { c: 'x' } })], [f({ a: 1, b: {} })]), { ok: false, reason: 'f: missing argument "v.b.c"' });
  assert.equal(cmp([f([1])], [f({ 0: 1 })]).ok, false);
});

test('canonical keys: equal exactly when values are equal under the rules', () => {
  assert.equal(canonicalKey({ b: [1, '2'], a: 'x ' }), canonicalKey({ a: 'x', b: ['1', 2] }));
  assert.notEqual(canonicalKey({ a: 'x' }), canonicalKey({ a: 'X' }));
  assert.notEqual(canonicalKey('5', false), canonicalKey(5, false));
  assert.notEqual(canonicalKey(['a,b']), canonicalKey(['a', 'b']));
});

// ---- end to end ----------------------------------------------------------------------------

const item: FunctionCallingItem = {
  id: '1',
  query: 'Weather in Paris in celsius, and search hotels (5 results).',
  tools: [
    { name: 'get_weather', description: 'Current weather', parameters: { city: { type: 'str', description: 'City' }, unit: { type: 'str, optional', default: 'celsius' } } },
    { name: 'search', description: 'Web search', parameters: { query: { type: 'str' }, limit: { type: 'int', default: 10 } } },
  ],
  answers: [weather, search],
};

test('verify: right and wrong answers from raw model text', () => {
  const right = '<tool_call>\n{"name": "search", "arguments": {"query": "hotels", "limit": "5"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>';
  assert.deepEqual(verifyFunctionCalling(item, right), { ok: true, reason: '2 calls matched' });
  assert.deepEqual(functionCallingTask.verify(item, right), { ok: true, reason: '2 calls matched' });
  assert.deepEqual(verifyFunctionCalling(item, 'The weather is nice.'), { ok: false, reason: 'no tool call found in the answer' });
  assert.deepEqual(verifyFunctionCalling(item, '<tool_call>oops</tool_call>'), { ok: false, reason: '<tool_call> block 1 does not hold valid JSON' });
  assert.equal(
    verifyFunctionCalling(item, '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "search", "arguments": {"query": "hotels", "limit": 5}}]').reason,
    'get_weather: missing argument "unit"',
  );
  // a task whose reference has no call is solved by making none
  assert.equal(verifyFunctionCalling({ answers: [] }, 'No tool fits this request.').ok, true);
  assert.equal(verifyFunctionCalling({ answers: [] }, '[{"name": "search", "arguments": {}}]').ok, false);
});

// ---- records, tools, prompts ----------------------------------------------------------------------

const record = {
  id: 7,
  query: 'Weather in Paris?',
  tools: JSON.stringify([{ name: 'get_weather', description: 'Current weather', parameters: { city: { type: 'str', description: 'City' } } }]),
  answers: JSON.stringify([{ name: 'get_weather', arguments: { city: 'Paris' } }]),
};

test('records: the xLAM layout loads; tools/answers must be JSON strings holding arrays', () => {
  const it = toFunctionCallingItem(record, 3);
  assert.deepEqual(it, {
    id: '7',
    query: 'Weather in Paris?',
    tools: [{ name: 'get_weather', description: 'Current weather', parameters: { city: { type: 'str', description: 'City' } } }],
    answers: [{ name: 'get_weather', arguments: { city: 'Paris' } }],
  });
  const { id: _omit, ...noId } = record;
  assert.equal(toFunctionCallingItem(noId, 3).id, 'L3');

  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...record, query: '' }, 'expected "query" to be a non-empty string'],
    [{ ...record, tools: 5 }, 'expected "tools" to be a JSON string holding an array of tool specs'],
    [{ ...record, tools: '{"name": "x"}' }, 'expected "tools" to hold a JSON array of tool specs'],
    [{ ...record, answers: '[{"name": "get_weather", "arguments": {"city": "Paris"}' }, '"answers" is not valid JSON'],
    [{ ...record, tools: '[{"description": "x"}]' }, 'expected "tools"[0] to be an object with a string "name"'],
    [{ ...record, answers: '[{"name": "nope", "arguments": {}}]' }, '"answers"[0] calls "nope", which is not in "tools"'],
    [{ ...record, answers: '[{"name": "get_weather", "arguments": [1]}]' }, 'expected "answers"[0].arguments to be an object'],
  ];
  for (const [rec, msg] of cases) {
    const text = `${JSON.stringify(record)}\n${JSON.stringify(rec)}\n`;
    assert.throws(
      () => parseJsonlText(text, 'fc.jsonl', toFunctionCallingItem),
      (err: unknown) => err instanceof DataError && err.message.startsWith(`fc.jsonl:2: ${msg}`),
      msg,
    );
  }
  // already-decoded arrays are tolerated
  const decoded = toFunctionCallingItem({ ...record, tools: JSON.parse(record.tools), answers: JSON.parse(record.answers) }, 1);
  assert.deepEqual(decoded.answers, it.answers);
});

const dir = mkdtempSync(join(tmpdir(), 'rrr-fc-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('load: JSONL and the JSON-array file of the xLAM release', async () => {
  const jsonl = join(dir, 'fc.jsonl');
  writeFileSync(jsonl, `${JSON.stringify(record)}\n${JSON.stringify({ ...record, id: 8, tools: 'x' })}\n`);
  await assert.rejects(functionCallingTask.load(jsonl), (err: unknown) => err instanceof DataError && err.message.startsWith(`${jsonl}:2: "tools" is not valid JSON`));
  const r = await functionCallingTask.load(jsonl, { skipBadLines: true });
  assert.equal(r.items.length, 1);
  assert.deepEqual(r.skipped.map((s) => s.line), [2]);

  const arr = join(dir, 'xlam.json');
  writeFileSync(arr, JSON.stringify([record, { ...record, id: 9 }], null, 2));
  const a = await functionCallingTask.load(arr);
  assert.deepEqual(a.items.map((x) => x.id), ['7', '9']);

  // Python's json.dump writes the array on one line; records without ids must stay apart.
  const { id: _, ...noId } = record;
  const queries = ['first', 'second', 'third'];
  const oneLine = join(dir, 'xlam-one-line.json');
  writeFileSync(oneLine, JSON.stringify(queries.map((query) => ({ ...noId, query }))));
  const o = await functionCallingTask.load(oneLine);
  assert.deepEqual(o.items.map((x) => [x.id, x.query]), [['L1#1', 'first'], ['L1#2', 'second'], ['L1#3', 'third']]);
});

test('prompt: the tools, as released, and the answer format in the system message; the query as the user message', () => {
  const messages = buildFunctionCallingPrompt(item);
  assert.equal(messages.length, 2);
  assert.equal(messages[0]?.role, 'system');
  assert.deepEqual(messages[1], { role: 'user', content: item.query });
  const sys = messages[0]?.content ?? '';
  for (const t of item.tools) assert.ok(sys.includes(JSON.stringify(t)), `missing ${t.name}`);
  assert.ok(sys.includes('[{"name": "function_name", "arguments": {"argument_name": value}}]'));
  assert.deepEqual(functionCallingTask.buildPrompt(item), messages);
});

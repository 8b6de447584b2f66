import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DataError,
  InvalidRecord,
  expectObject,
  parseJsonlText,
  readJsonl,
  recordId,
  type RecordValidator,
} from '../src/tasks/jsonl.js';

const dir = mkdtempSync(join(tmpdir(), 'rrr-jsonl-'));
after(() => rmSync(dir, { recursive: true, force: true }));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

interface Rec {
  id: string;
  n: number;
}
const validate: RecordValidator<Rec> = (value, line, nth) => {
  const o = expectObject(value);
  if (typeof o['n'] !== 'number') throw new InvalidRecord('expected "n" to be a number');
  return { id: recordId(o, line, nth), n: o['n'] };
};

async function rejects(p: Promise<unknown>): Promise<DataError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof DataError, `expected DataError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), 'message must be one line');
    return err;
  }
  assert.fail('expected a DataError');
}

test('reads records, skipping blank lines; ids fall back to the line number', async () => {
  const p = file('ok.jsonl', '{"n": 1}\n\n   \n{"n": 2, "id": "x"}\n{"n": 3, "id": 17}\n');
  const r = await readJsonl(p, validate);
  assert.deepEqual(r.items, [
    { id: 'L1', n: 1 },
    { id: 'x', n: 2 },
    { id: '17', n: 3 },
  ]);
  assert.deepEqual(r.skipped, []);
});

test('tolerates CRLF line ends, a BOM and a missing final newline', async () => {
  const p = file('crlf.jsonl', '\ufeff{"n": 1}\r\n{"n": 2}\r\n{"n": 3}');
  const r = await readJsonl(p, validate);
  assert.deepEqual(r.items.map((x) => x.n), [1, 2, 3]);
  assert.deepEqual(r.items.map((x) => x.id), ['L1', 'L2', 'L3']);
});

test('bad JSON: one-line error with path and 1-based line number', async () => {
  const p = file('badjson.jsonl', '{"n": 1}\n\n{"n": }\n{"n": 4}\n');
  const err = await rejects(readJsonl(p, validate));
  assert.match(err.message, new RegExp(`^${escape(p)}:3: invalid JSON \\(`));
  assert.equal(err.line, 3);
  assert.equal(err.path, p);
});

test('a record failing the validator names path, line and what was expected', async () => {
  const p = file('badrec.jsonl', '{"n": 1}\n{"n": "two"}\n');
  const err = await rejects(readJsonl(p, validate));
  assert.equal(err.message, `${p}:2: expected "n" to be a number`);
  assert.equal(err.line, 2);
  const err2 = await rejects(readJsonl(file('arr.jsonl', '{"n": 0}\n[1, 2]\n'), validate));
  assert.equal(err2.message, `${join(dir, 'arr.jsonl')}:2: expected a JSON object`);
});

test('skipBadLines collects every bad line and keeps the good ones', async () => {
  const p = file('mixed.jsonl', '{"n": 1}\n{oops\n{"n": 3}\n{"n": null}\n{"n": 5, "id": []}\n');
  const r = await readJsonl(p, validate, { skipBadLines: true });
  assert.deepEqual(r.items.map((x) => x.n), [1, 3]);
  assert.equal(r.skipped.length, 3);
  assert.deepEqual(r.skipped.map((s) => s.line), [2, 4, 5]);
  assert.ok(r.skipped.every((s) => s.path === p));
  assert.match(r.skipped[0]?.message ?? '', /^invalid JSON/);
  assert.equal(r.skipped[1]?.message, 'expected "n" to be a number');
  assert.equal(r.skipped[2]?.message, 'expected "id" to be a non-empty string or a number');
});

test('missing file, directory and empty file give one-line errors naming the path', async () => {
  const missing = join(dir, 'nope.jsonl');
  assert.equal((await rejects(readJsonl(missing, validate))).message, `${missing}: file not found`);
  const d = join(dir, 'adir');
  mkdirSync(d);
  assert.equal((await rejects(readJsonl(d, validate))).message, `${d}: is a directory, expected a dataset file`);
  const empty = file('empty.jsonl', '\n\n');
  assert.equal((await rejects(readJsonl(empty, validate))).message, `${empty}: no records found`);
  const allBad = file('allbad.jsonl', 'x\ny\n');
  assert.equal(
    (await rejects(readJsonl(allBad, validate, { skipBadLines: true }))).message,
    `${allBad}: no valid records (2 bad lines skipped)`,
  );
  const r = await readJsonl(empty, validate, { allowEmpty: true });
  // The digest is of the bytes read.
  assert.deepEqual(r, { items: [], skipped: [], digest: createHash('sha256').update('\n\n').digest('hex') });
});

test('errors that are not InvalidRecord are bugs and propagate unchanged', () => {
  const buggy: RecordValidator<never> = () => {
    throw new TypeError('boom');
  };
  assert.throws(() => parseJsonlText('{"n":1}\n', 'x.jsonl', buggy, { skipBadLines: true }), /^TypeError: boom$/);
});

test('JSON array files: elements are records, errors name the line where the element starts', async () => {
  const text = '[\n  {"n": 1},\n  {"n": 2,\n   "id": "b"},\n  {"n": "bad"},\n  {"n": 4, "s": "a,]}{\\"x"}\n]\n';
  const p = file('arr.json', text);
  const err = await rejects(readJsonl(p, validate, { allowJsonArray: true }));
  assert.equal(err.message, `${p}:5: expected "n" to be a number`);
  const r = await readJsonl(p, validate, { allowJsonArray: true, skipBadLines: true });
  assert.deepEqual(r.items, [
    { id: 'L2', n: 1 },
    { id: 'b', n: 2 },
    { id: 'L6', n: 4 },
  ]);
  assert.deepEqual(r.skipped.map((s) => s.line), [5]);
});

test('JSON array files: bad element JSON is skippable; structural problems are fatal', async () => {
  const p = file('arr2.json', '[{"n": 1}, {"n": 2,,}, {"n": 3}]');
  const r = await readJsonl(p, validate, { allowJsonArray: true, skipBadLines: true });
  assert.deepEqual(r.items, [
    { id: 'L1#1', n: 1 },
    { id: 'L1#3', n: 3 },
  ]);
  assert.equal(r.skipped.length, 1);
  assert.match(r.skipped[0]?.message ?? '', /^invalid JSON/);

  const open = file('open.json', '[{"n": 1},\n{"n": 2}\n');
  assert.match((await rejects(readJsonl(open, validate, { allowJsonArray: true }))).message, /not closed/);
  const trailing = file('trail.json', '[{"n": 1}]\n\nxyz\n');
  assert.equal(
    (await rejects(readJsonl(trailing, validate, { allowJsonArray: true }))).message,
    `${trailing}:3: unexpected text after the JSON array`,
  );
  const comma = file('comma.json', '[{"n": 1},]');
  assert.match((await rejects(readJsonl(comma, validate, { allowJsonArray: true }))).message, /expected an array element/);
});

test('records sharing a line (a one-line JSON array, as json.dump writes) get ids of their own', async () => {
  const p = file('oneline.json', '[{"n": 1}, {"n": 2}, {"n": 3, "id": "c"}, {"n": 4}]\n');
  const r = await readJsonl(p, validate, { allowJsonArray: true });
  assert.deepEqual(r.items.map((x) => x.id), ['L1#1', 'L1#2', 'c', 'L1#4']);
  // A record alone on its line keeps the plain fallback, as before.
  const q = file('lines.json', '[\n{"n": 1},\n{"n": 2}\n]');
  assert.deepEqual((await readJsonl(q, validate, { allowJsonArray: true })).items.map((x) => x.id), ['L2', 'L3']);
});

test('a repeated id is refused (items are looked up by id), or skipped with skipBadLines', async () => {
  const p = file('dup.jsonl', '{"n": 1, "id": "a"}\n{"n": 2}\n{"n": 3, "id": "a"}\n{"n": 4, "id": "L2"}\n{"n": 5, "id": 7}\n{"n": 6, "id": "7"}\n');
  const err = await rejects(readJsonl(p, validate));
  assert.equal(err.message, `${p}:3: id "a" repeats the record on line 1 (each record needs its own id)`);
  const r = await readJsonl(p, validate, { skipBadLines: true });
  assert.deepEqual(r.items.map((x) => x.n), [1, 2, 5]);
  assert.deepEqual(
    r.skipped.map((s) => [s.line, s.message]),
    [
      [3, 'id "a" repeats the record on line 1 (each record needs its own id)'],
      [4, 'id "L2" repeats the record on line 2 (each record needs its own id)'],
      [6, 'id "7" repeats the record on line 5 (each record needs its own id)'],
    ],
  );
});

test('without allowJsonArray a JSON array file is named as such, on one line or many', async () => {
  const why = ': a JSON array; this task reads JSON Lines, one {...} record per line (only function-calling also reads an array file)';
  for (const [name, text] of [
    ['notarr.jsonl', '[\n{"n": 1}\n]\n'],
    ['onearr.json', '[{"n": 1}, {"n": 2}]'],
  ] as const) {
    const p = file(name, text);
    assert.equal((await rejects(readJsonl(p, validate))).message, `${p}:1${why}`);
    assert.equal((await rejects(readJsonl(p, validate, { skipBadLines: true }))).message, `${p}:1${why}`);
  }
});

test('a byte-order mark inside the file (files joined with cat) is named', async () => {
  const p = file('joined.jsonl', '\ufeff{"n": 1}\n\ufeff{"n": 2}\n');
  assert.equal((await rejects(readJsonl(p, validate))).message, `${p}:2: a byte-order mark (U+FEFF) inside the file, where files were joined? (remove it)`);
});

test('a line of control bytes is quoted escaped in its error, not sent to the terminal', async () => {
  const p = file('control.jsonl', '\x00\x01\x1b[31mgarbage\n');
  const err = await rejects(readJsonl(p, validate));
  assert.match(err.message, new RegExp(`^${escape(p)}:1: invalid JSON`));
  assert.doesNotMatch(err.message, /[\x00-\x1f\x7f]/);
  assert.match(err.message, /\\x00\\x01\\x1b\[31mgarbage/);
});

test('a FIFO given as a dataset is refused, not read until a writer comes', async () => {
  const p = join(dir, 'pipe.jsonl');
  assert.equal(spawnSync('mkfifo', [p]).status, 0, 'mkfifo');
  const err = await rejects(readJsonl(p, validate));
  assert.equal(err.message, `${p}: not a regular file, expected a dataset file`);
});

test('a line not in UTF-8 is reported with its number (skipped on request); in a JSON array it refuses the file', async () => {
  const p = join(dir, 'latin1.jsonl');
  writeFileSync(p, Buffer.concat([Buffer.from('{"n": 1}\n{"n": 2, "s": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n{"n": 3}\n')]));
  assert.equal((await rejects(readJsonl(p, validate))).message, `${p}:2: not valid UTF-8`);
  const r = await readJsonl(p, validate, { skipBadLines: true });
  assert.equal(r.items.length, 2);
  assert.deepEqual(r.skipped, [{ path: p, line: 2, message: 'not valid UTF-8' }]);
  const arr = join(dir, 'latin1.json');
  writeFileSync(arr, Buffer.concat([Buffer.from('[\n{"n": 1},\n{"n": 2, "s": "'), Buffer.from([0xff]), Buffer.from('"}\n]\n')]));
  assert.equal((await rejects(readJsonl(arr, validate, { allowJsonArray: true, skipBadLines: true }))).message, `${arr}:3: not valid UTF-8`);
  // U+FFFD written as UTF-8 is text like any other.
  const fffd = file('fffd.jsonl', '{"n": 1, "s": "\ufffd"}\n');
  assert.equal((await readJsonl(fffd, validate)).items.length, 1);
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateSynthetic, syntheticTask, verifySynthetic, SYNTHETIC_SECRET, SYNTHETIC_WORDS } from '../src/tasks/synthetic.js';
import { testDir } from './helpers/models.js';

test('verifier: the first word must be the secret', () => {
  const item = { id: 'x', options: ['apple', 'river', 'stone', 'cloud'], secret: 'river' };
  assert.equal(verifySynthetic(item, ' river').ok, true);
  assert.equal(verifySynthetic(item, 'River, I think').ok, true);
  assert.equal(verifySynthetic(item, ': river stone').ok, true);
  assert.deepEqual(verifySynthetic(item, ' stone river'), { ok: false, reason: "answered 'stone', not the secret" });
  assert.deepEqual(verifySynthetic(item, '42 !?'), { ok: false, reason: 'no word in the answer' });
  assert.equal(verifySynthetic(item, 'rivers').ok, false);
});

test('generator: deterministic, secret fixed across seeds and always offered', () => {
  const a = generateSynthetic(20, 5);
  assert.deepEqual(a, generateSynthetic(20, 5));
  assert.notDeepEqual(a.map((i) => i.options), generateSynthetic(20, 6).map((i) => i.options));
  for (const it of [...a, ...generateSynthetic(20, 6)]) {
    assert.equal(it.secret, SYNTHETIC_SECRET);
    assert.equal(it.options.length, 4);
    assert.equal(new Set(it.options).size, 4);
    assert.ok(it.options.includes(it.secret));
    assert.ok(it.options.every((w) => SYNTHETIC_WORDS.includes(w)));
  }
  const positions = new Set(a.map((i) => i.options.indexOf(i.secret)));
  assert.ok(positions.size > 1, 'the secret moves around');
  assert.equal(generateSynthetic(3, 1, { size: 6, secret: 'tiger' })[0]!.options.length, 6);
  assert.throws(() => generateSynthetic(3, 1, { secret: 'zebra' }), /secret must be one of/);
});

test('prompt names the options but not the secret', () => {
  const [m] = syntheticTask.buildPrompt({ id: 'x', options: ['apple', 'river', 'stone', 'cloud'], secret: 'river' });
  assert.equal(m!.content, 'Pick the secret word from: apple river stone cloud');
  assert.ok(!/secret word is/.test(m!.content));
});

test('loader validates records', async () => {
  const p = join(testDir(), 'syn.jsonl');
  writeFileSync(p, '{"id": "a", "options": ["apple", "river"], "secret": "river"}\n{"options": ["apple"], "secret": "apple"}\n{"options": ["apple", "river"], "secret": "tiger"}\n');
  await assert.rejects(syntheticTask.load(p), /syn\.jsonl:2: expected "options" to be an array of at least 2 single words/);
  const r = await syntheticTask.load(p, { skipBadLines: true });
  assert.equal(r.items.length, 1);
  assert.equal(r.items[0]!.id, 'a');
  assert.deepEqual(r.skipped.map((b) => b.line), [2, 3]);
  assert.match(r.skipped[1]!.message, /expected "secret" to be one of "options"/);
});

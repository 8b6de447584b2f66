// The command line as a user meets it: help text, JSON output, exit codes, one-line errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/engine/native.js';
import { testDir } from './helpers/models.js';

const main = join(packageRoot, 'dist', 'src', 'cli', 'main.js');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, RRR_DEBUG: '' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function assertOneLineError(r: { code: number | null; err: string }, code: number, pattern: RegExp) {
  assert.equal(r.code, code, r.err);
  const lines = r.err.trimEnd().split('\n');
  assert.equal(lines.length, 1, `stderr should be one line:\n${r.err}`);
  assert.match(lines[0]!, /^rrr-native: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.err, /\n\s+at /);
}

test('--help lists the commands and every flag is described', () => {
  const r = cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /make-tiny-model/);
  assert.match(r.out, /info/);
  const sub = cli('make-tiny-model', '--help');
  assert.equal(sub.code, 0);
  for (const flag of ['--arch', '--out', '--preset', '--type', '--embd', '--layers', '--heads', '--kv-heads', '--head-dim', '--ff', '--ctx', '--tied', '--seed', '--vocab', '--json']) {
    const line = sub.out.split('\n').find((l) => l.trimStart().startsWith(flag));
    assert.ok(line, `${flag} missing from help`);
    assert.ok(line.replace(flag, '').replace(/\[.*?\]/g, '').trim().length > 3, `${flag} has no description`);
  }
});

test('make-tiny-model then info --json', () => {
  const out = join(testDir(), 'cli-tiny.gguf');
  const made = cli('make-tiny-model', '--arch', 'llama', '--out', out, '--layers', '3', '--json');
  assert.equal(made.code, 0, made.err);
  const m = JSON.parse(made.out) as { bytes: number; arch: string };
  assert.equal(m.arch, 'llama');
  assert.ok(m.bytes > 1e6);
  const info = cli('info', '--model', out, '--json', '--device', 'cpu');
  assert.equal(info.code, 0, info.err);
  const j = JSON.parse(info.out) as { model: { arch: string; nLayer: number }; devices: { type: string }[]; build: { cuda: boolean } };
  assert.equal(j.model.arch, 'llama');
  assert.equal(j.model.nLayer, 3);
  assert.ok(j.devices.some((d) => d.type === 'cpu'));
  assert.equal(typeof j.build.cuda, 'boolean');
});

test('missing model file: one line, exit 1, no stack', () => {
  assertOneLineError(cli('info', '--model', '/nonexistent/m.gguf'), 1, /\/nonexistent\/m\.gguf: no such file/);
});

test('usage errors exit 2', () => {
  assertOneLineError(cli('make-tiny-model'), 2, /Missing required argument: out/);
  assertOneLineError(cli('no-such-command'), 2, /Unknown argument|Did you mean/);
  assertOneLineError(cli('make-tiny-model', '--out', 'x.gguf', '--arch', 'gpt2'), 2, /Invalid values/);
});

test('a refused weight type leaves no file behind', () => {
  const dir = join(testDir(), 'refused');
  const out = join(dir, 'm.gguf');
  const r0 = cli('make-tiny-model', '--out', out);
  assertOneLineError(r0, 1, /could not write|No such file|cannot/);
  assert.ok(!existsSync(dir));
  const out2 = join(testDir(), 'bad-type.gguf');
  assertOneLineError(cli('make-tiny-model', '--out', out2, '--type', 'q9_9'), 1, /--type: unknown weight type 'q9_9'/);
  assertOneLineError(cli('make-tiny-model', '--out', out2, '--type', 'q4_K'), 1, /not a multiple of the block size 256/);
  assert.deepEqual(readdirSync(testDir()).filter((f) => f.startsWith('bad-type')), []);
});

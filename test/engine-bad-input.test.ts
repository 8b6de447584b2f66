// Bad model files must give one-line errors that name the file, and never crash the process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, readSync, closeSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Model, RrrError, Trainer } from '../src/engine/index.js';
import { tinyModel, testDir } from './helpers/models.js';
import { writeRawModel } from './helpers/gguf-writer.js';

async function loadError(path: string): Promise<RrrError> {
  try {
    const m = await Model.load(path, { device: 'cpu' });
    m.dispose();
  } catch (e) {
    assert.ok(e instanceof RrrError, `expected RrrError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `message must be one line: ${e.message}`);
    assert.ok(e.message.startsWith(path), `message must start with the path: ${e.message}`);
    return e;
  }
  assert.fail(`loading ${path} should have failed`);
}

function truncatedCopy(src: string, bytes: number, name: string): string {
  const buf = Buffer.alloc(bytes);
  const fd = openSync(src, 'r');
  readSync(fd, buf, 0, bytes, 0);
  closeSync(fd);
  const out = join(testDir(), name);
  writeFileSync(out, buf);
  return out;
}

test('missing file', async () => {
  const e = await loadError(join(testDir(), 'does-not-exist.gguf'));
  assert.match(e.message, /no such file/);
});

test('a directory instead of a file', async () => {
  const d = join(testDir(), 'a-dir.gguf');
  mkdirSync(d, { recursive: true });
  assert.match((await loadError(d)).message, /is a directory/);
});

test('not a GGUF file', async () => {
  const p = join(testDir(), 'text.gguf');
  writeFileSync(p, 'this is not a model\n');
  assert.match((await loadError(p)).message, /not a GGUF file/);
});

test('empty file', async () => {
  const p = join(testDir(), 'empty.gguf');
  writeFileSync(p, '');
  assert.match((await loadError(p)).message, /not a GGUF file/);
});

test('truncated inside the metadata', async () => {
  const p = truncatedCopy(await tinyModel(), 4096, 'cut-meta.gguf');
  assert.match((await loadError(p)).message, /corrupt or truncated/);
});

test('truncated inside the tensor data', async () => {
  const src = await tinyModel();
  const p = truncatedCopy(src, Math.floor(statSync(src).size * 0.8), 'cut-data.gguf');
  assert.match((await loadError(p)).message, /truncated file \(tensor '.+' ends at byte \d+, file has \d+\)/);
});

test('unknown architecture', async () => {
  const p = join(testDir(), 'gpt2.gguf');
  writeRawModel(p, { arch: 'gpt2' });
  assert.match((await loadError(p)).message, /unsupported architecture 'gpt2' \(supported: llama, qwen2, qwen3\)/);
});

test('wrong tensor shape', async () => {
  const p = join(testDir(), 'bad-shape.gguf');
  writeRawModel(p, { badTensor: { name: 'blk.0.attn_k.weight', shape: [8, 6] } });
  assert.match((await loadError(p)).message, /tensor 'blk.0.attn_k.weight' has shape \[8, 6\], expected \[8, 8\]/);
});

test('missing tensor', async () => {
  const p = join(testDir(), 'no-ffn.gguf');
  writeRawModel(p, { drop: 'blk.0.ffn_up.weight' });
  assert.match((await loadError(p)).message, /missing tensor 'blk.0.ffn_up.weight'/);
});

test('weights without a tokenizer', async () => {
  const p = join(testDir(), 'no-tokenizer.gguf');
  writeRawModel(p);
  assert.match((await loadError(p)).message, /could not load the tokenizer/);
});

test('the process survives all of the above and still loads a good model', async () => {
  const m = await Model.load(await tinyModel(), { device: 'cpu' });
  assert.equal(m.info.arch, 'qwen2');
  m.dispose();
});

test('bad forward input is rejected with a clear message', async () => {
  const m = await Model.load(await tinyModel(), { device: 'cpu' });
  try {
    await assert.rejects(m.forward([[1, 2, m.info.nVocab + 5]]), (e: Error) => e instanceof RrrError && /outside the vocabulary/.test(e.message));
    await assert.rejects(m.forward([]), /empty batch/);
    await assert.rejects(m.forward([[]]), /sequence 0 is empty/);
    const long = new Int32Array(m.info.nCtxTrain + 1).fill(10);
    await assert.rejects(m.forward([long]), /context overflow: sequence 0 has 2049 tokens, the model's context length is 2048/);
  } finally {
    m.dispose();
  }
  await assert.rejects(m.forward([[1, 2]]), /disposed/);
});

test('a bad micro-batch size is refused in one line, by the engine and by the addon', async () => {
  const m = await Model.load(await tinyModel(), { device: 'cpu' });
  const t = await Trainer.create(m, { rank: 2, alpha: 4, targets: ['q'] }, { lr: 1e-3 });
  try {
    const batch = [{ tokens: Int32Array.from([1, 2, 3]), weights: Float32Array.from([0, 1, 1]) }];
    await assert.rejects(t.step(batch, { lr: 1e-3, microBatchTokens: -5 }), /step: microBatchTokens must be a whole number ≥ 0, 0 = the whole batch at once \(got -5\)/);
    await assert.rejects(async () => t.rawTrainer.step(batch, { lr: 1e-3, microBatchTokens: -5 } as never), /microBatchTokens: must be a whole number >= 0/);
  } finally {
    t.dispose();
    m.dispose();
  }
});

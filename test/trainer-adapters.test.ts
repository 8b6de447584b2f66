// Learning on a fixed sequence, AdamW's update, adapter files through libllama's own LoRA loader,
// merges and export, and training state that resumes bit for bit.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, existsSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join, relative } from 'node:path';
import { Model, ReferenceModel, Trainer, mergeAdapter } from '../src/engine/index.js';
import { testDir } from './helpers/models.js';
import { deviceTol } from './helpers/tolerance.js';
import { writeGguf } from './helpers/gguf-writer.js';
import { ALL, DEVICE, tinyModel, randomizeB, seq, mixedBatch, maxAbsDiff } from './helpers/trainer-fixtures.js';

describe('learning and adapter files', () => {
  test('positive weight on a fixed sequence raises its log-prob; libllama loads the adapter and agrees', async () => {
    const { path, model } = await tinyModel('learn');
    const tr = await Trainer.create(model, { rank: 8, alpha: 16, targets: [...ALL], seed: 2 }, { lr: 1e-2 });
    const target = seq(16, 42);
    const weights = new Float32Array(target.length).fill(1);
    const [before] = await tr.logprobs([target]);
    const mean = (v: Float32Array) => v.subarray(1).reduce((s, x) => s + x, 0) / (v.length - 1);
    let last = 0;
    for (let i = 0; i < 30; i++) last = (await tr.step([{ tokens: target, weights }], { lr: 1e-2 })).meanLogprob;
    const [afterLp] = await tr.logprobs([target]);
    assert.ok(mean(afterLp!) > mean(before!) + 8, `mean log-prob ${mean(before!)} -> ${mean(afterLp!)}`);
    assert.ok(mean(afterLp!) > last, 'the last step improved on the log-prob it saw');
    assert.equal(tr.info.steps, 30);

    const adapterPath = join(testDir(), 'learn-adapter.gguf');
    await tr.saveAdapter(adapterPath);
    const seqs = [target, seq(7, 5)];
    const ours = await model.forward(seqs, { adapter: tr });
    const base = await model.forward(seqs);
    const ref = await ReferenceModel.load(path, { nCtx: 64, threads: 2 });
    await ref.setAdapter(adapterPath);
    const theirs = await ref.logits(seqs);
    let diff = 0;
    let moved = 0;
    for (let i = 0; i < ours.logits.length; i++) {
      diff = Math.max(diff, Math.abs(ours.logits[i]! - theirs.logits[i]!));
      moved = Math.max(moved, Math.abs(ours.logits[i]! - base.logits[i]!));
    }
    assert.ok(moved > 1, `the adapter should change the logits (max change ${moved})`);
    // libllama runs on the CPU here: on a GPU build this is also a cross-device check.
    assert.ok(diff < deviceTol(2e-3, 6e-2), `our logits with the adapter vs libllama's LoRA loader: max |diff| ${diff}`);
    ref.dispose();

    // The same weights read back through our loader and through export --merge.
    const again = await Trainer.fromAdapter(model, adapterPath);
    assert.deepEqual(again.info.targets, [...ALL]);
    assert.deepEqual(again.params(), tr.params());
    const merged = join(testDir(), 'learn-merged.gguf');
    const m = await mergeAdapter({ model: path, adapter: adapterPath, out: merged });
    assert.equal(m.merged, 2 * 7);
    const mm = await Model.load(merged, { device: DEVICE, threads: 2 });
    const ml = await mm.forward(seqs);
    let md = 0;
    for (let i = 0; i < ml.logits.length; i++) md = Math.max(md, Math.abs(ml.logits[i]! - ours.logits[i]!));
    assert.ok(md < deviceTol(2e-3, 6e-2), `merged model vs adapter: max |diff| ${md}`);
    mm.dispose();

    // An adapter that skips layers (PEFT's layers_to_transform): libllama loads it, and so do
    // our loader (the skipped pairs change nothing) and export --merge, to the same logits.
    const partialPath = join(testDir(), 'learn-partial.gguf');
    const rank = 8;
    const kept = Object.entries(tr.params()).filter(([name]) => name.startsWith('blk.1.'));
    writeGguf(
      partialPath,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' }, 'adapter.lora.alpha': { f32: 16 } },
      kept.map(([name, data]) => ({ name, data, shape: name.endsWith('lora_a') ? [data.length / rank, rank] : [rank, data.length / rank] })),
    );
    const partial = await Trainer.fromAdapter(model, partialPath);
    assert.equal(Object.values(partial.params()).filter((v) => v.some((x) => x !== 0)).length > kept.length, true, 'the skipped layers keep their A');
    for (const [name, v] of Object.entries(partial.params())) {
      if (name.startsWith('blk.0.') && name.endsWith('lora_b')) assert.ok(v.every((x) => x === 0), `${name} is zero`);
      if (name.startsWith('blk.1.')) assert.deepEqual(v, tr.params()[name]);
    }
    // An adapter file through our loader, libllama's and export --merge, on the same sequences.
    const threeWays = async (file: string, loaded: Trainer, projections: number) => {
      const logits = (await model.forward(seqs, { adapter: loaded })).logits;
      const ref = await ReferenceModel.load(path, { nCtx: 64, threads: 2 });
      await ref.setAdapter(file);
      const theirs = (await ref.logits(seqs)).logits;
      ref.dispose();
      const out = file.replace(/\.gguf$/, '-merged.gguf');
      assert.equal((await mergeAdapter({ model: path, adapter: file, out })).merged, projections);
      const mm = await Model.load(out, { device: DEVICE, threads: 2 });
      const merged = (await mm.forward(seqs)).logits;
      mm.dispose();
      return { logits, vsLibllama: maxAbsDiff(logits, theirs), vsMerged: maxAbsDiff(logits, merged), moved: maxAbsDiff(logits, base.logits) };
    };
    const p = await threeWays(partialPath, partial, 7);
    const [pDiff, pMergedDiff, pMoved, pFromFull] = [p.vsLibllama, p.vsMerged, p.moved, maxAbsDiff(p.logits, ours.logits)];
    assert.ok(pMoved > 0.1 && pFromFull > 0.1, `half the adapter moves the logits, and not as the whole one (${pMoved}, ${pFromFull})`);
    assert.ok(pDiff < deviceTol(2e-3, 6e-2), `partial adapter, ours vs libllama's: max |diff| ${pDiff}`);
    assert.ok(pMergedDiff < deviceTol(2e-3, 6e-2), `partial adapter merged vs applied: max |diff| ${pMergedDiff}`);
    // Half a pair is refused by name.
    const halfPath = join(testDir(), 'learn-half.gguf');
    writeGguf(
      halfPath,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' }, 'adapter.lora.alpha': { f32: 16 } },
      kept.filter(([name]) => name !== 'blk.1.attn_k.weight.lora_b').map(([name, data]) => ({ name, data, shape: name.endsWith('lora_a') ? [data.length / rank, rank] : [rank, data.length / rank] })),
    );
    await assert.rejects(Trainer.fromAdapter(model, halfPath), /learn-half\.gguf: layer 1 attn_k has lora_a without its lora_b$/);

    // As llama.cpp's converter may write them: lora_a in q8_0 (--outtype q8_0; lora_b, whose rows
    // are rank long, in f16), no adapter.lora.alpha (libllama then scales by 1), a norm vector
    // (skipped by both loaders). Ours, libllama's and the merged model give the same logits.
    const convertedPath = join(testDir(), 'learn-converted.gguf');
    const shape = (name: string, data: Float32Array) => (name.endsWith('lora_a') ? [data.length / rank, rank] : [rank, data.length / rank]);
    writeGguf(
      convertedPath,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' } },
      [
        ...kept.map(([name, data]) => ({ name, data, shape: shape(name, data), type: name.endsWith('lora_a') ? ('q8_0' as const) : ('f16' as const) })),
        { name: 'blk.0.attn_norm.weight', shape: [model.info.nEmbd], fill: 1 },
      ],
    );
    const converted = await Trainer.fromAdapter(model, convertedPath);
    assert.equal(converted.info.alpha, rank, 'no alpha: scale 1, as alpha = rank');
    const c = await threeWays(convertedPath, converted, 7);
    const [cDiff, cMergedDiff, cMoved] = [c.vsLibllama, c.vsMerged, c.moved];
    assert.ok(cMoved > 0.1, `the converted adapter moves the logits (${cMoved})`);
    // libllama multiplies by the q8_0 tensors as stored, its CPU product rounding the inputs to
    // 8 bits too; we multiply by their f32 values. Measured on the CPU: 0.040 where the adapter
    // moves the logits by 13.
    assert.ok(cDiff < 0.01 * cMoved, `converted adapter, ours vs libllama's: max |diff| ${cDiff} where it moves them by ${cMoved}`);
    assert.ok(cMergedDiff < deviceTol(2e-3, 6e-2), `converted adapter merged vs applied: max |diff| ${cMergedDiff}`);
    converted.dispose();
    // A tensor that is not a LoRA's is refused by name, as libllama refuses it; so are lora_a and
    // lora_b of different ranks.
    const junkPath = join(testDir(), 'learn-junk.gguf');
    writeGguf(
      junkPath,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' }, 'adapter.lora.alpha': { f32: 16 } },
      [...kept.map(([name, data]) => ({ name, data, shape: shape(name, data) })), { name: 'rrr.junk', shape: [4], fill: 1 }],
    );
    await assert.rejects(Trainer.fromAdapter(model, junkPath), /learn-junk\.gguf: tensor 'rrr\.junk' is not a LoRA tensor \(expected names ending in \.lora_a or \.lora_b; llama\.cpp refuses it too\)$/);
    await assert.rejects(mergeAdapter({ model: path, adapter: junkPath, out: join(testDir(), 'junk-merged.gguf') }), /tensor 'rrr\.junk' is not a LoRA tensor/);
    // An alpha stored as f64: ours reads it, libllama would abort the process on it, so its
    // loader is not asked.
    const f64Path = join(testDir(), 'learn-f64.gguf');
    writeGguf(
      f64Path,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' }, 'adapter.lora.alpha': { f64: 16 } },
      kept.map(([name, data]) => ({ name, data, shape: shape(name, data) })),
    );
    const f64 = await Trainer.fromAdapter(model, f64Path);
    assert.equal(f64.info.alpha, 16);
    f64.dispose();
    const f64Ref = await ReferenceModel.load(path, { nCtx: 64, threads: 2 });
    await assert.rejects(f64Ref.setAdapter(f64Path), /learn-f64\.gguf: adapter\.lora\.alpha is stored as f64; libllama reads only f32$/);
    f64Ref.dispose();
    const ranksPath = join(testDir(), 'learn-ranks.gguf');
    writeGguf(
      ranksPath,
      { 'general.architecture': { str: model.info.arch }, 'general.type': { str: 'adapter' }, 'adapter.type': { str: 'lora' }, 'adapter.lora.alpha': { f32: 16 } },
      kept.map(([name, data]) => (name === 'blk.1.attn_q.weight.lora_a' ? { name, shape: [data.length / rank, rank / 2], fill: 0.01 } : { name, data, shape: shape(name, data) })),
    );
    await assert.rejects(mergeAdapter({ model: path, adapter: ranksPath, out: join(testDir(), 'ranks-merged.gguf') }), /learn-ranks\.gguf: 'blk\.1\.attn_q\.weight' has lora_a of rank 4 and lora_b of rank 8$/);
    partial.dispose();
    again.dispose();
    tr.dispose();
    model.dispose();
  });

  test('export --merge into a 4-bit base re-quantizes its projections (and says so), or keeps them f16 on request', async () => {
    const { path, model } = await tinyModel('merge-q4_0', { type: 'q4_0' });
    const tr = await Trainer.create(model, { rank: 8, alpha: 16, targets: [...ALL], seed: 5 }, { lr: 1e-2 });
    randomizeB(tr, 0.3);
    const adapter = join(testDir(), 'merge-q4_0.adapter.gguf');
    await tr.saveAdapter(adapter);
    const seqs = [seq(16, 3)];
    const applied = (await model.forward(seqs, { adapter: tr })).logits;
    const base = (await model.forward(seqs)).logits;
    const merged = async (mergedType: 'base' | 'f16') => {
      const out = join(testDir(), `merge-q4_0-${mergedType}.gguf`);
      const r = await mergeAdapter({ model: path, adapter, out, mergedType });
      const m = await Model.load(out, { device: DEVICE, threads: 2 });
      const l = (await m.forward(seqs)).logits;
      m.dispose();
      let d = 0;
      for (let i = 0; i < l.length; i++) d = Math.max(d, Math.abs(l[i]! - applied[i]!));
      return { r, d };
    };
    let moved = 0;
    for (let i = 0; i < base.length; i++) moved = Math.max(moved, Math.abs(applied[i]! - base[i]!));
    const q = await merged('base');
    const f = await merged('f16');
    assert.deepEqual([q.r.merged, q.r.quantized, q.r.quantizedType], [14, 14, 'q4_0']);
    assert.deepEqual([f.r.merged, f.r.quantized, f.r.quantizedType], [14, 0, undefined]);
    // What is left in f16 is the q4_0 base's own rounding of the products base + adapter runs.
    assert.ok(f.d < q.d / 2, `merged in f16: ${f.d} from base + adapter, re-quantized: ${q.d} (the adapter moves the logits by ${moved})`);
    await assert.rejects(mergeAdapter({ model: path, adapter, out: join(testDir(), 'x.gguf'), mergedType: 'q4' as never }), /--merged-type: expected base, f16, bf16 or f32, got 'q4'/);
    tr.dispose();
    model.dispose();
  });

  test("AdamW's update is the formula's: betas, eps, decoupled weight decay and bias correction over two steps", async () => {
    const { model } = await tinyModel('adamw');
    // Betas and eps away from the defaults, so a betas option dropped on its way to ggml shows.
    const o = { lr: 1e-2, beta1: 0.7, beta2: 0.8, eps: 1e-3, weightDecay: 0.2, gradClip: 0 };
    const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: ['q', 'down'], seed: 5 }, o);
    randomizeB(tr, 0.3, 2);
    const batch = mixedBatch();
    const m: Record<string, Float64Array> = {};
    const v: Record<string, Float64Array> = {};
    for (let t = 1; t <= 2; t++) {
      const lr = t === 1 ? 1e-2 : 4e-3;
      const p0 = tr.params();
      const g = (await tr.gradients(batch)).grads;
      await tr.step(batch, { lr });
      const p1 = tr.params();
      let worst = 0;
      let moved = 0;
      for (const [name, w] of Object.entries(p0)) {
        const gr = g[name]!;
        m[name] ??= new Float64Array(w.length);
        v[name] ??= new Float64Array(w.length);
        for (let i = 0; i < w.length; i++) {
          m[name]![i] = o.beta1 * m[name]![i]! + (1 - o.beta1) * gr[i]!;
          v[name]![i] = o.beta2 * v[name]![i]! + (1 - o.beta2) * gr[i]! * gr[i]!;
          const mh = m[name]![i]! / (1 - o.beta1 ** t);
          const vh = v[name]![i]! / (1 - o.beta2 ** t);
          const want = w[i]! * (1 - lr * o.weightDecay) - (lr * mh) / (Math.sqrt(vh) + o.eps);
          worst = Math.max(worst, Math.abs(p1[name]![i]! - want));
          moved = Math.max(moved, Math.abs(want - w[i]!));
        }
      }
      // f32 weights and moments against doubles: a few ulps of values near 0.3, beside steps of ~lr.
      assert.ok(moved > 1e-3, `step ${t} moves the weights (${moved})`);
      assert.ok(worst < 1e-5, `step ${t}: largest gap to the formula ${worst} (steps up to ${moved})`);
    }
    await assert.rejects(Trainer.create(model, { rank: 4, alpha: 8, targets: ['q'] }, { lr: 1e-2, beta1: 1 }), /beta1: must be in \[0, 1\)/);
    tr.dispose();
    model.dispose();
  });

  test('training state resumes bit-for-bit; files are written atomically; mismatches are named', async () => {
    const { model } = await tinyModel('state');
    const cfg = { rank: 4, alpha: 8, targets: ['q', 'v', 'up'] as ('q' | 'v' | 'up')[], seed: 9 };
    const opt = { lr: 1e-2, weightDecay: 0.01, gradClip: 0.5 };
    const batch = mixedBatch();
    const a = await Trainer.create(model, cfg, opt);
    for (let i = 0; i < 3; i++) await a.step(batch, { lr: 1e-2 });
    const state = join(testDir(), 'state.gguf');
    await a.saveState(state);
    for (let i = 0; i < 2; i++) await a.step(batch, { lr: 5e-3 });

    const b = await Trainer.create(model, { ...cfg, seed: 1 }, opt);
    await b.loadState(state);
    assert.equal(b.info.steps, 3);
    for (let i = 0; i < 2; i++) await b.step(batch, { lr: 5e-3 });
    assert.deepEqual(b.params(), a.params());
    assert.deepEqual(readdirSync(testDir()).filter((f) => f.includes('.tmp-')), []);

    const other = await Trainer.create(model, { ...cfg, rank: 8 }, opt);
    const adapterPath = join(testDir(), 'rank4.gguf');
    await a.saveAdapter(adapterPath);
    await assert.rejects(other.loadAdapter(adapterPath), /rank4\.gguf: adapter rank 4 does not match the trainer's rank 8/);
    await assert.rejects(other.loadState(state), /state\.gguf: adapter rank 4 does not match/);

    const q3 = await tinyModel('state-qwen3', { arch: 'qwen3' });
    await assert.rejects(Trainer.fromAdapter(q3.model, adapterPath), /adapter for architecture 'qwen2', but the model is 'qwen3'/);
    await assert.rejects(a.saveAdapter(join(testDir(), 'no-such-testDir()', 'x.gguf')), /x\.gguf: cannot write/);
    assert.equal(existsSync(join(testDir(), 'no-such-testDir()')), false);
    q3.model.dispose();
    other.dispose();
    a.dispose();
    b.dispose();
    model.dispose();
  });

  test('rrr-native export --merge writes the merged model and fails in one line on a wrong adapter', async () => {
    const { path, model } = await tinyModel('cli');
    const tr = await Trainer.create(model, { rank: 2, alpha: 4, targets: ['q', 'down'] }, { lr: 1e-2 });
    randomizeB(tr, 0.1);
    const adapterPath = join(testDir(), 'cli-adapter.gguf');
    await tr.saveAdapter(adapterPath);
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const out = join(testDir(), 'cli-merged.gguf');
    const ok = spawnSync(process.execPath, [cli, 'export', '--merge', '--model', path, '--adapter', adapterPath, '--out', out], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /4 projections merged/);
    assert.ok(existsSync(out));
    const bad = spawnSync(process.execPath, [cli, 'export', '--merge', '--model', path, '--adapter', path, '--out', join(testDir(), 'x.gguf')], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^rrr-native: .*cli\.gguf: not a LoRA adapter GGUF.*\n$/);
    assert.equal(existsSync(join(testDir(), 'x.gguf')), false);
    // --out naming an input another way (relative, through a link) is refused; the input stays.
    const link = join(testDir(), 'cli-model-link.gguf');
    rmSync(link, { force: true });
    symlinkSync(path, link);
    const before = readFileSync(path);
    for (const [model, outPath] of [[link, path], [path, relative(process.cwd(), path)], [path, relative(process.cwd(), adapterPath)]]) {
      const same = spawnSync(process.execPath, [cli, 'export', '--merge', '--model', model!, '--adapter', adapterPath, '--out', outPath!], { encoding: 'utf8' });
      assert.equal(same.status, 1, same.stdout);
      assert.match(same.stderr, /^rrr-native: --out .*: it is the file of --model or --adapter\n$/);
    }
    assert.deepEqual(readFileSync(path), before);
    const folder = spawnSync(process.execPath, [cli, 'export', '--merge', '--model', path, '--adapter', adapterPath, '--out', testDir()], { encoding: 'utf8' });
    assert.equal(folder.status, 1, folder.stdout);
    assert.match(folder.stderr, /^rrr-native: --out .*: is a folder \(expected the path of the \.gguf file to write\)\n$/);
    tr.dispose();
    model.dispose();
  });
});

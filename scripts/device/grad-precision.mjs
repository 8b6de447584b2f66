#!/usr/bin/env node
// How close a 16-bit base's LoRA gradients come to the f32 base's, on the device that runs it:
// the Qwen2.5-1.5B shape cut to a few layers, f32 and f16 models drawn from the same values, one
// batch with advantages of both signs. ggml-cuda multiplies f16 weights in f16 (f16 sums) unless
// GGML_CUDA_CUBLAS_COMPUTE_TYPE says otherwise; the CPU converts inputs to f16 and sums in f32.
// Prints one JSON line per variant: cosine and norm ratio to the f32 gradient, overall and for the
// worst layer. Usage: grad-precision.mjs [--device cuda] [--layers 4] [--batch 4] [--len 512]
import { parseArgs } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Model, Trainer, makeTinyModel } from '../../dist/src/engine/index.js';

const { values: a } = parseArgs({
  options: {
    device: { type: 'string', default: 'cuda' },
    layers: { type: 'string', default: '4' },
    batch: { type: 'string', default: '4' },
    len: { type: 'string', default: '512' },
  },
});
const [nLayer, B, L] = [Number(a.layers), Number(a.batch), Number(a.len)];
const targets = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

async function gradients(type, cublas) {
  const out = join(tmpdir(), `rrr-grad-precision-${type}-${nLayer}.gguf`);
  await makeTinyModel({ out, preset: 'qwen2.5-1.5b', nLayer, type, seed: 7 });
  const model = await Model.load(out, { device: a.device });
  const tr = await Trainer.create(model, { rank: 16, alpha: 32, targets, seed: 3 }, { lr: 1e-4 });
  // B = 0 would leave A's gradient zero: small deterministic values instead.
  for (const [name, v] of Object.entries(tr.params())) {
    if (name.includes('lora_b')) tr.setParam(name, Float32Array.from(v, (_, i) => 0.01 * Math.sin(0.37 * i + name.length)));
  }
  const batch = Array.from({ length: B }, (_, b) => ({
    tokens: Int32Array.from({ length: L }, (_, i) => (i * 7919 + b * 31) % model.info.nVocab),
    weights: new Float32Array(L).fill(b % 2 ? 1 : -1),
  }));
  const before = process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
  if (cublas) process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = cublas;
  try {
    const r = await tr.gradients(batch, {});
    return { grads: r.grads, lossScale: r.lossScale };
  } finally {
    if (before === undefined) delete process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE;
    else process.env.GGML_CUDA_CUBLAS_COMPUTE_TYPE = before;
    tr.dispose();
    model.dispose();
  }
}

function compare(ref, g) {
  const byLayer = new Map();
  const all = [0, 0, 0];
  for (const [name, r] of Object.entries(ref)) {
    const x = g[name];
    const layer = name.match(/blk\.(\d+)\./)?.[1] ?? 'other';
    const s = byLayer.get(layer) ?? [0, 0, 0];
    for (let i = 0; i < r.length; i++) {
      s[0] += r[i] * x[i];
      s[1] += r[i] * r[i];
      s[2] += x[i] * x[i];
    }
    byLayer.set(layer, s);
    for (let k = 0; k < 3; k++) all[k] += s[k];
  }
  const cos = ([d, rr, xx]) => d / Math.sqrt(rr * xx);
  const ratio = ([, rr, xx]) => Math.sqrt(xx / rr);
  let worst = null;
  for (const [layer, s] of byLayer) if (!worst || cos(s) < worst.cos) worst = { layer, cos: cos(s), normRatio: ratio(s) };
  return { cos: cos(all), normRatio: ratio(all), worst };
}

const ref = await gradients('f32');
for (const [label, type, cublas] of [
  ['f16', 'f16', undefined],
  ['f16, cuBLAS bf16', 'f16', 'bf16'],
  ['bf16', 'bf16', undefined],
]) {
  if (cublas && a.device !== 'cuda') continue;
  const g = await gradients(type, cublas);
  console.log(JSON.stringify({ label, device: a.device, layers: nLayer, tokens: B * L, lossScale: g.lossScale, ...compare(ref.grads, g.grads) }));
}

// Shared by the trainer's tests (trainer-*.test.ts): tiny models, batches, and the gradient checks
// against finite differences and against another path through the graph.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Model, Trainer, makeTinyModel, type GradientsResult } from '../../src/engine/index.js';
import type { StepOptions, TrainSequence, TrainerOptions } from '../../src/engine/types.js';
import { TEST_DEVICE, testDir } from './models.js';
import { ON_GPU, deviceTol } from './tolerance.js';

export const ALL = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
// CPU by default; RRR_TEST_DEVICE=cuda runs the same checks on a GPU build.
export const DEVICE = TEST_DEVICE;

export async function tinyModel(
  name: string,
  opts: { arch?: 'llama' | 'qwen2' | 'qwen3'; type?: string; nEmbd?: number; nHead?: number; nHeadKv?: number; nLayer?: number } = {},
): Promise<{ path: string; model: Model }> {
  const path = join(testDir(), `${name}.gguf`);
  const type = opts.type ?? 'f32';
  // An f32 model is f32 end to end: a 16-bit output table would round the last hidden state
  // (ggml's CPU) or accumulate the logits in f16 (ggml-cuda's cuBLAS path), and that rounding,
  // not the gradients, would set the finite differences' gaps.
  await makeTinyModel({ ...opts, out: path, arch: opts.arch ?? 'qwen2', type, ...(type === 'f32' ? { embdType: 'f32' as const } : {}), seed: 7 });
  return { path, model: await Model.load(path, { device: DEVICE, threads: 2 }) };
}

// Deterministic normal noise for test data.
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** Non-zero B so that every adapter tensor has a gradient (a fresh adapter has B = 0, hence dA = 0). */
export function randomizeB(tr: Trainer, std: number, seed = 1): void {
  const g = rng(seed);
  for (const [name, v] of Object.entries(tr.params())) {
    if (name.endsWith('lora_b')) tr.setParam(name, v.map(() => std * g()));
  }
}

/** Trainers with options `a` and `b`, holding the same adapter (B randomised, so every tensor has a gradient). */
export async function pairedTrainers(model: Model, a: TrainerOptions, b: TrainerOptions): Promise<[Trainer, Trainer]> {
  const spec = { rank: 4, alpha: 8, targets: [...ALL], seed: 3 };
  const first = await Trainer.create(model, spec, { lr: 1e-3 }, a);
  const second = await Trainer.create(model, spec, { lr: 1e-3 }, b);
  randomizeB(first, 0.3);
  setAll(second, first.params());
  return [first, second];
}

/** A trainer on ggml's ops and one with `nodes`, holding the same adapter. */
export async function opsAndNodes(model: Model, nodes: TrainerOptions): Promise<[Trainer, Trainer]> {
  return pairedTrainers(model, {}, nodes);
}

export function seq(n: number, offset: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 7919 + offset) % 150000);
}

/** Two sequences: a positive advantage on a span of the first, a negative one on the second. */
export function mixedBatch(): TrainSequence[] {
  const a = seq(14, 5);
  const b = seq(10, 77);
  const wa = new Float32Array(a.length);
  wa.fill(1.2, 4, 12);
  const wb = new Float32Array(b.length);
  wb.fill(-0.8, 2, 9);
  return [
    { tokens: a, weights: wa },
    { tokens: b, weights: wb },
  ];
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

export function dot(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let s = 0;
  for (const [k, v] of Object.entries(a)) {
    const w = b[k]!;
    for (let i = 0; i < v.length; i++) s += v[i]! * w[i]!;
  }
  return s;
}

export function shifted(p: Record<string, Float32Array>, d: Record<string, Float32Array>, h: number): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(p)) out[k] = v.map((x, i) => x + h * d[k]![i]!);
  return out;
}

export function setAll(tr: Trainer, p: Record<string, Float32Array>): void {
  for (const [k, v] of Object.entries(p)) tr.setParam(k, v);
}

/** The largest |a - b| over all gradient elements: how far apart two ways of computing them lie. */
export function largestDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let d = 0;
  for (const [k, v] of Object.entries(a)) v.forEach((x, i) => (d = Math.max(d, Math.abs(x - b[k]![i]!))));
  return d;
}

/**
 * Every element of gradients `b` within tol·(|a_i| + s) of `a`'s; `label` names the case in
 * failures. On the CPU s = 1. On a GPU f32 products run on TF32 tensor cores and f16 ones sum in
 * f16, so an element's error follows the size of the terms summed into it rather than its own:
 * s = max(1, rms of `a`). That matters with KL on the tests' large adapters: one token's
 * e^(ref − lp) reaches 1,000 (qwen2, B std 0.3: ref − lp = 6.95), and the gradient's rms is 3.2
 * against 0.17 without KL (max 52 against 1.6). On an H200 two correct ways of computing such a
 * step parted by 0.029 at an element of 0.105, 0.9% of that rms.
 */
export function assertSameGrads(a: Record<string, Float32Array>, b: Record<string, Float32Array>, tol: number, label = ''): void {
  let sq = 0, n = 0;
  for (const v of Object.values(a)) for (const x of v) (sq += x * x), n++;
  const s = ON_GPU ? Math.max(1, Math.sqrt(sq / Math.max(n, 1))) : 1;
  // A failure names the worst element and how many part, not only the first: one GPU run then
  // says how far a bound is off.
  let over = 0, worst = 0, at = '';
  for (const [k, v] of Object.entries(a)) {
    const w = b[k]!;
    for (let i = 0; i < v.length; i++) {
      const [d, bound] = [Math.abs(v[i]! - w[i]!), tol * (Math.abs(v[i]!) + s)];
      if (!(d <= bound)) over++;
      const r = d === 0 ? 0 : d / bound; // tol 0 asks for equal bits: any difference is Infinity× it
      if (!(r <= worst) && !Number.isNaN(worst)) [worst, at] = [r, `${k}[${i}]: ${v[i]} vs ${w[i]}`]; // a NaN, once met, is the worst
    }
  }
  assert.ok(over === 0, `${label}${label ? ' ' : ''}${at} (${over} of ${n} elements past the bound, the worst at ${worst.toPrecision(3)}× it)`);
}

/**
 * Two ways of computing the same step, `a` and `b`, with recomputation, a kept layer, none, and
 * with KL: the same loss and gradients within f32 rounding (1e-5; 1e-4 for gradients with KL,
 * whose e^(ref − lp) amplifies it), or within `gpuTol` on a GPU.
 */
export async function assertSameAcrossModes(
  label: string,
  a: (extra: Omit<StepOptions, 'lr'>) => Promise<GradientsResult>,
  b: (extra: Omit<StepOptions, 'lr'>) => Promise<GradientsResult>,
  gpuTol: number,
): Promise<void> {
  for (const extra of [{}, { keptLayers: 1 }, { recompute: false }, { beta: 0.1 }]) {
    const [ga, gb] = [await a(extra), await b(extra)];
    const what = `${JSON.stringify(extra)} (${label})`;
    assert.ok(Math.abs(ga.loss - gb.loss) <= deviceTol(1e-5, gpuTol) * Math.abs(ga.loss), `${what}: loss ${ga.loss} vs ${gb.loss}`);
    assertSameGrads(ga.grads, gb.grads, deviceTol('beta' in extra ? 1e-4 : 1e-5, gpuTol), what);
  }
}

/**
 * A step option (`way`) that computes the adapter another way than the path (`path`): on a tiny
 * qwen2 with a large adapter, finite differences pass with it, several LM-head chunks and
 * micro-batches, and it gives the path's gradients (assertSameAcrossModes; 3e-2 on a GPU, where
 * with KL the first element past 1e-2 was at 8.7e-3 of assertSameGrads' GPU scale, merged, on an
 * H200, as for plain against flash attention).
 */
export async function checkAgainstPath(name: string, way: Omit<StepOptions, 'lr'>, path: Omit<StepOptions, 'lr'>) {
  const { model } = await tinyModel(`grad-${name}`);
  const tr = await Trainer.create(model, { rank: 4, alpha: 8, targets: [...ALL], seed: 3 }, { lr: 1e-3 });
  randomizeB(tr, 0.3);
  const opts = { logitsChunkRows: 4, microBatchTokens: 14, ...way };
  await checkGradients(tr, mixedBatch(), opts);
  await assertSameAcrossModes(
    `path vs ${name}`,
    (extra) => tr.gradients(mixedBatch(), { ...opts, ...extra, ...path }),
    (extra) => tr.gradients(mixedBatch(), { ...opts, ...extra }),
    3e-2,
  );
  return { model, tr, opts };
}

/** Central difference of the loss along direction d (unit norm), against the analytic Σ g·d. */
/**
 * The loss's derivative along d. On the CPU, f32 end to end, the central difference's own error
 * (h² times the third derivative) is what parts it from the gradient, up to 1.2% along the A
 * tensors at h = 0.01, so Richardson's extrapolation over h and h/2 cancels that term (the gaps
 * left: 0.005% or less, 0.13% where clipping puts a kink in the loss). A GPU's TF32 rounding is
 * larger than that term, and extrapolation would amplify it 2.7 times: there the plain central
 * difference.
 */
export async function directional(tr: Trainer, batch: TrainSequence[], opts: Omit<StepOptions, 'lr'>, d: Record<string, Float32Array>, h = 1e-2) {
  if (ON_GPU) return central(tr, batch, opts, d, h);
  return (4 * (await central(tr, batch, opts, d, h / 2)) - (await central(tr, batch, opts, d, h))) / 3;
}

export async function central(tr: Trainer, batch: TrainSequence[], opts: Omit<StepOptions, 'lr'>, d: Record<string, Float32Array>, h: number) {
  const p0 = tr.params();
  setAll(tr, shifted(p0, d, h));
  const lp = (await tr.evaluate(batch, opts)).loss;
  setAll(tr, shifted(p0, d, -h));
  const lm = (await tr.evaluate(batch, opts)).loss;
  setAll(tr, p0);
  return (lp - lm) / (2 * h);
}

export function unit(g: Record<string, Float32Array>): Record<string, Float32Array> {
  const n = Math.sqrt(dot(g, g));
  const out: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(g)) out[k] = v.map((x) => x / n);
  return out;
}

export function randomDirection(like: Record<string, Float32Array>, seed: number): Record<string, Float32Array> {
  const g = rng(seed);
  const d: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(like)) d[k] = v.map(() => g());
  return unit(d);
}

// Finite differences' bound, relative. On the CPU (f32 end to end, extrapolated) the checks part
// by 0.13% at most, so 0.5% catches a missing term of that size. A GPU's forward passes run
// ggml-cuda's f32 products on TF32 tensor cores: a step of h = 0.01 along a unit vector moves a
// typical adapter element by about its TF32 rounding step or less, so the two losses' rounding
// does not cancel. On an H200 (2026-11-27) one check parted by 2.1%, with the models' output
// table then f16, whose logits ggml-cuda's cuBLAS path accumulates in f16; emulated TF32 on the
// CPU parted by up to 2.0%. Under the GPU's rules each check prints its gaps (FD-GAPS).
export const FD_TOL = deviceTol(0.005, 0.05);

/**
 * The gradient checks: along the gradient itself and along a random direction (all tensors at
 * once, where f32 rounding of the loss is negligible against the signal), plus the largest
 * coordinates of a few individual tensors (looser: single coordinates carry little signal).
 */
export async function checkGradients(tr: Trainer, batch: TrainSequence[], opts: Omit<StepOptions, 'lr'>, { tol = FD_TOL, h = 1e-2, label = '' } = {}) {
  const at = label ? `${label}: ` : '';
  const g = await tr.gradients(batch, opts);
  const gn = Math.sqrt(dot(g.grads, g.grads));
  assert.ok(gn > 1e-3, `${at}gradient too small to check (${gn})`);
  assert.ok(Math.abs(gn - g.gradNorm) <= 1e-3 * gn, `${at}reported gradNorm ${g.gradNorm} vs ${gn}`);
  // Along the gradient restricted to the A tensors, then to the B tensors: each part is checked
  // against its own norm, so an error in the smaller part cannot hide behind the larger.
  const parts: { part: string; along: number; np: number }[] = [];
  for (const part of ['lora_a', 'lora_b']) {
    const gp: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(g.grads)) gp[k] = k.endsWith(part) ? v : new Float32Array(v.length);
    const np = Math.sqrt(dot(gp, gp));
    parts.push({ part, along: await directional(tr, batch, opts, unit(gp), h), np });
  }
  const d = randomDirection(g.grads, 99);
  const fd = await directional(tr, batch, opts, d, h);
  const an = dot(g.grads, d);
  // Under the GPU's rules every gap is printed, passed or not: a bound of 5% alone would not say
  // whether TF32 off (gpu-check.sh fusedtests:notf32) brings the gaps back under the CPU's 2%.
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  if (ON_GPU) console.log(`FD-GAPS ${label || 'unlabelled'}: ${parts.map((p) => `${p.part} ${pct((p.along - p.np) / p.np)}`).join(', ')}, random ${pct((fd - an) / gn)} of |g|`);
  for (const { part, along, np } of parts) {
    assert.ok(Math.abs(along - np) <= tol * np, `${at}along the ${part} gradient: finite difference ${along}, analytic ${np}`);
  }
  assert.ok(Math.abs(fd - an) <= tol * gn, `${at}random direction: finite difference ${fd}, analytic ${an} (|g| ${gn})`);
  return g;
}

export async function checkCoordinates(tr: Trainer, batch: TrainSequence[], opts: Omit<StepOptions, 'lr'>, names: string[]) {
  const g = await tr.gradients(batch, opts);
  const p0 = tr.params();
  for (const name of names) {
    const gr = g.grads[name]!;
    let i = 0;
    for (let j = 1; j < gr.length; j++) if (Math.abs(gr[j]!) > Math.abs(gr[i]!)) i = j;
    const h = 1e-2;
    const p = p0[name]!.slice();
    p[i] = p0[name]![i]! + h;
    tr.setParam(name, p);
    const lp = (await tr.evaluate(batch, opts)).loss;
    p[i] = p0[name]![i]! - h;
    tr.setParam(name, p);
    const lm = (await tr.evaluate(batch, opts)).loss;
    tr.setParam(name, p0[name]!);
    const fd = (lp - lm) / (2 * h);
    assert.ok(Math.abs(fd - gr[i]!) <= 0.1 * Math.abs(gr[i]!) + 0.01, `${name}[${i}]: finite difference ${fd}, analytic ${gr[i]}`);
  }
}

/** The FLOPs a 2 x 16-token step plans, by its census. */
export async function plannedFlops(tr: Trainer): Promise<number> {
  return (await tr.plan(2, 16, { census: true })).census!.reduce((a, o) => a + o.flops, 0);
}

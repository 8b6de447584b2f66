#!/usr/bin/env node
// Prints the figures a GPU check is for, from the JSON files gpu-check.sh wrote into one folder:
// decode tok/s against llama.cpp and the DESIGN.md H100 anchors, training against PEFT, and
// the op profile's slowest kinds. gpu-check.sh appends it to summary.txt, whose end the device
// tool returns, so a call's reply already holds the table.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] ?? '.';
const ANCHORS = { 1: 402, 16: 3700, 64: 11100 }; // llama-batched-bench, H100, DESIGN.md
const PEFT_ANCHOR = { tokPerSec: 22370, peakGiB: 48.3 };
const read = (f) => {
  const p = join(dir, f);
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch {
    return undefined;
  }
};
const fix = (x, d = 0) => (typeof x === 'number' ? x.toFixed(d) : '-');
const out = [];

for (const f of ['bench.json', 'bench-unified.json', 'bench-host-sampling.json']) {
  const g = read(f)?.generation?.data;
  if (!g?.results) continue;
  out.push(`${f}: decode tok/s (${g.kvLayout} KV, device sampling ${g.deviceSampling ? 'on' : 'off'}) N, ours, llama.cpp, ratio, ours/H100 anchor, same greedy`);
  for (const r of g.results) {
    const ours = r.ours?.decode, ref = r.llamaCpp?.decode, a = ANCHORS[r.parallel];
    out.push(`  ${r.parallel} ${fix(ours)} ${fix(ref)} ${ref ? fix(ours / ref, 2) : '-'} ${a ? fix(ours / a, 2) : '-'} ${r.sameGreedyTokens ?? '-'}`);
  }
}

// The RRR retry pass: its start shared, against whole prompts (ours, then llama.cpp's).
for (const f of ['bench.json', 'bench-unified.json']) {
  const r = read(f)?.retries?.data;
  if (!r?.ours) continue;
  out.push(`${f}: retry pass ${r.tasks}x${r.group}, start ${r.start} + rest ${r.rest}, ${r.gen} new: pass ms shared, whole, llama.cpp whole; prefill ms the same; same greedy (whole, llama.cpp)`);
  out.push(`  ${fix(r.ours.ms)} ${fix(r.oursWhole?.ms)} ${fix(r.llamaCpp?.ms)}; ${fix(r.ours.prefillMs)} ${fix(r.oursWhole?.prefillMs)} ${fix(r.llamaCpp?.prefillMs)}; ${r.sameTokensWhole ?? '-'} ${r.sameTokensLlamaCpp ?? '-'}`);
}

const peftLine = existsSync(join(dir, 'summary.txt'))
  ? readFileSync(join(dir, 'summary.txt'), 'utf8').split('\n').find((l) => l.includes('"tokPerSec"'))
  : undefined;
let peft = PEFT_ANCHOR;
if (peftLine) {
  try {
    peft = JSON.parse(peftLine.slice(peftLine.indexOf('{')));
  } catch { /* keep the anchor */ }
}
// Training rows: the full bench's, then each variant gpu-check.sh appended to bench-train.jsonl
// (older checks wrote one file per variant).
const trainRows = [['bench.json', read('bench.json')]];
const jsonl = join(dir, 'bench-train.jsonl');
if (existsSync(jsonl)) {
  for (const line of readFileSync(jsonl, 'utf8').split('\n').filter(Boolean)) {
    try {
      const { label, report } = JSON.parse(line);
      trainRows.push([label, report]);
    } catch { /* a cut line */ }
  }
}
for (const f of ['bench-train.json', 'bench-train-budget.json', 'bench-train-norecompute.json', 'bench-train-perstep.json']) trainRows.push([f, read(f)]);
for (const [f, report] of trainRows) {
  const t = report?.['lora-training-step']?.data;
  if (!t?.tokPerSec) continue;
  // Model weights + the drop in free memory, as PEFT's peak counts its weights too (older runs: the drop alone).
  const gib = (t.gpuTotalBytes ?? t.gpuBytes) ? (t.gpuTotalBytes ?? t.gpuBytes) / 2 ** 30 : undefined;
  out.push(
    `${f}: training ${fix(t.tokPerSec)} tok/s (${fix(t.tokPerSec / peft.tokPerSec, 2)}x PEFT ${fix(peft.tokPerSec)}), ${fix(t.msPerStep)} ms/step (plan's estimate ${fix(t.estimatedMs)}), ` +
      `${fix(gib, 1)} GiB (${gib ? fix(gib / peft.peakGiB, 2) : '-'}x PEFT ${fix(peft.peakGiB, 1)}), recompute ${t.recompute ?? '-'}, kept layers ${t.keptLayers ?? 0}${t.keptF16 ? ' (gate/up f16)' : ''}, ` +
      `compute buffer ${fix((t.computeBytes ?? 0) / 2 ** 20)} MiB (planned ${fix((t.plannedComputeBytes ?? 0) / 2 ** 20)}${t.plannedTotalBytes ? `, ${fix(t.plannedTotalBytes / 2 ** 30, 1)} GiB in all` : ''}), ` +
      `Wt kept ${fix((t.transposedWeightsBytes ?? 0) / 2 ** 20)} MiB, cuBLAS ${t.cublasCompute ?? 'auto'}, adapter ${t.mergeAdapter ? 'merged' : `fused: ${t.fuseAdapter ?? 'off'}`}, flash attention ${t.flashAttn ? 'on' : 'off'}, splits ${t.graphSplits} (${t.graphHostInputs ?? '?'} host inputs, ${t.graphCustomRuns ?? '?'} runs of our nodes), host graph work ${fix(t.graphMsPerStep, 1)} ms/step, fallback [${(t.fallbackOps ?? []).join(' ')}]`,
  );
  // The plan's census (bench --train-census): bytes the step's ops read and write, beside its time
  // (on a GPU counted for ggml-cuda's kernels, their conversions included).
  if (t.census) out.push(`  planned (${t.census.kernels ?? 'graph'} kernels): ${t.census.count} ops, ${fix(t.census.bytes / 1e9, 1)} GB moved, ${fix(t.census.flops / 1e12, 2)} TFLOP`);
  if (t.profile) {
    const total = t.profile.ops.reduce((a, o) => a + o.ms, 0);
    const top = (key) => {
      const by = new Map();
      for (const o of t.profile.ops) by.set(key(o), (by.get(key(o)) ?? 0) + o.ms);
      return [...by].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, ms]) => `${k} ${fix(ms)} (${fix((100 * ms) / total)}%)`).join(', ');
    };
    out.push(`  profiled step ${fix(t.profile.stepMs)} ms, by op: ${top((o) => o.op)}`);
    if (t.profile.ops.some((o) => o.role)) out.push(`  by role: ${top((o) => o.role)}`);
    // Bytes the census planned for a role over the ms the profile timed it: how far each role is
    // from the memory bandwidth (or, for products, from the GEMM rate).
    if (t.census?.ops) {
      const sum = (ops, f) => {
        const by = new Map();
        for (const o of ops) by.set(o.role, (by.get(o.role) ?? 0) + f(o));
        return by;
      };
      const ms = sum(t.profile.ops, (o) => o.ms), bytes = sum(t.census.ops, (o) => o.bytes), flops = sum(t.census.ops, (o) => o.flops);
      const rows = [...ms].filter(([r]) => bytes.has(r)).sort((a, b) => b[1] - a[1]).slice(0, 10);
      out.push(`  GB/s by role: ${rows.map(([r, m]) => `${r} ${fix(bytes.get(r) / 1e6 / m)}${flops.get(r) ? ` (${fix(flops.get(r) / 1e9 / m, 1)} TFLOP/s)` : ''}`).join(', ')}`);
    }
  }
}
// A variant that only moves the waits between our nodes and ggml-cuda's (-dw) runs the same
// kernels in the same order: its steps' losses must be its base variant's to the bit.
const losses = new Map(trainRows.map(([label, report]) => [label, report?.['lora-training-step']?.data?.losses]).filter(([, l]) => Array.isArray(l)));
for (const [label, l] of losses) {
  const base = label.endsWith('-dw') ? losses.get(label.slice(0, -3)) : undefined;
  if (!base) continue;
  const same = base.length === l.length && base.every((x, i) => Object.is(x, l[i]));
  out.push(`${label}: losses ${same ? `the same as ${label.slice(0, -3)}'s to the bit` : `PART from ${label.slice(0, -3)}'s: ${JSON.stringify(l)} against ${JSON.stringify(base)}`}`);
}
console.log(out.length ? out.join('\n') : `no bench results in ${dir}`);

// `rrr-native bench` end to end on a tiny model: both engines run, the JSON report has a row
// per batch size with speeds, KV memory and greedy agreement; bad flags fail in one line.
// Speeds are only checked to be positive numbers: timing is never asserted.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTinyModel } from '../src/engine/index.js';

const dir = mkdtempSync(join(tmpdir(), 'rrr-bench-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('bench --json reports ours and llama.cpp side by side for each batch size', async () => {
  const model = join(dir, 'tiny.gguf');
  await makeTinyModel({ out: model, arch: 'llama' });
  const r = run(['bench', '--model', model, '--prompt', '12', '--gen', '6', '--parallel', '1', '3', '--kv-type', 'f32', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '1',
    '--retry-tasks', '2', '--retry-group', '3', '--retry-start', '20', '--retry-rest', '5', '--retry-gen', '4', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  const g = j.generation.data;
  assert.equal(g.prompt, 12);
  assert.equal(g.gen, 6);
  assert.deepEqual(g.results.map((x: { parallel: number }) => x.parallel), [1, 3]);
  for (const x of g.results) {
    for (const side of [x.ours, x.llamaCpp]) {
      assert.ok(side.prefill > 0 && side.decode > 0, JSON.stringify(side));
      assert.ok(side.kvBytes > 0 && side.nCells >= 12 + x.parallel * 6);
    }
    assert.equal(x.ours.nCells, x.parallel * 256, 'one stream of prompt + completion per sequence, in whole 256-cell tiles');
    assert.equal(x.sameGreedyTokens, x.parallel, 'f32 caches: identical greedy tokens');
    assert.deepEqual([x.ours.graphSplits, x.ours.fallbackOps], [1, []], 'where our graphs ran');
  }
  assert.deepEqual([g.kvLayout, g.referenceKv], ['streams', 'streams']);
  // The retry pass: each task's start read once with suffixes, once per retry without.
  const rp = j.retries.data;
  assert.deepEqual([rp.tasks, rp.group, rp.start, rp.rest, rp.gen], [2, 3, 20, 5, 4]);
  assert.equal(rp.ours.promptTokens, 2 * 20 + 6 * 5);
  assert.equal(rp.oursWhole.promptTokens, 6 * 25);
  assert.equal(rp.llamaCpp.promptTokens, 6 * 25);
  // One prefill graph for the starts and one for the rests; the whole prompts fit one.
  assert.deepEqual([rp.ours.prefillSteps, rp.oursWhole.prefillSteps], [2, 1]);
  assert.ok(rp.ours.ms > 0 && rp.oursWhole.ms > 0 && rp.llamaCpp.ms > 0, JSON.stringify(rp));
  assert.deepEqual([rp.sameTokensWhole, rp.sameTokensLlamaCpp], [6, 6], 'f32 caches: the same greedy tokens all three ways');
  const t = j['lora-training-step'].data;
  assert.deepEqual([t.batch, t.len, t.steps], [2, 16, 1]);
  assert.ok(t.tokPerSec > 0 && t.msPerStep > 0);
  assert.deepEqual([t.graphSplits, t.fallbackOps], [1, []]);
  // the warm-up step's loss and the timed one's, after an update
  assert.equal(t.losses.length, 2);
  assert.ok(t.losses.every((x: number) => Number.isFinite(x)) && t.losses[0] !== t.losses[1], JSON.stringify(t.losses));

  const u = run(['bench', '--model', model, '--prompt', '12', '--gen', '6', '--parallel', '3', '--kv-type', 'f32', '--threads', '1', '--kv-layout', 'unified', '--no-train', '--json']);
  assert.equal(u.status, 0, u.stderr);
  const ug = JSON.parse(u.stdout).generation.data;
  assert.deepEqual([ug.kvLayout, ug.referenceKv], ['unified', 'unified'], 'llama.cpp follows our layout unless --reference-kv says otherwise');
  assert.equal(ug.results[0].ours.nCells, 256, 'the unified cache holds the shared prompt once (12 + 3 × 6 cells, one 256-cell tile)');
  assert.equal(ug.results[0].sameGreedyTokens, 3);
});

test('bench --train-census counts the planned step, and --train-merge-adapter times the merged one', async () => {
  const model = join(dir, 'tiny-census.gguf');
  await makeTinyModel({ out: model, arch: 'qwen2' });
  const r = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '1', '--train-census', '--train-merge-adapter', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const t = JSON.parse(r.stdout)['lora-training-step'].data;
  assert.equal(t.mergeAdapter, true);
  const ops = t.census.ops as { role: string; count: number; bytes: number; flops: number }[];
  assert.ok(ops.length > 0 && t.census.bytes > 0 && t.census.flops > 0, JSON.stringify(t.census).slice(0, 200));
  assert.equal(t.census.count, ops.reduce((a, o) => a + o.count, 0));
  assert.ok(Math.abs(t.census.bytes - ops.reduce((a, o) => a + o.bytes, 0)) <= 1e-9 * t.census.bytes);
  assert.ok(ops.some((o) => o.role === 'bwd.lora'), 'roles named');
  const text = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '1', '--train-census', '--train-profile']);
  assert.equal(text.status, 0, text.stderr);
  // Profiled and counted: each role's time beside its planned bytes.
  assert.match(text.stdout, /the same roles against the planned work[^\n]*\n {4}\S+ +[\d.]+ ms +[\d.]+ [MG]B {2}\d+ GB\/s/);
  assert.match(text.stdout, /planned work: [\d,]+ ops, [\d.]+ MB read and written, [\d.]+ GFLOP in products; most bytes by op kind:/);
  assert.match(text.stdout, /most bytes by role:\n {4}\S+/);
  // --train-steps 0 plans and counts without running a step: the same census.
  const planned = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-merge-adapter', '--json']);
  assert.equal(planned.status, 0, planned.stderr);
  const p = JSON.parse(planned.stdout)['lora-training-step'].data;
  assert.equal(p.steps, 0);
  assert.equal(p.tokPerSec, undefined);
  assert.deepEqual([p.census.bytes, p.census.count, p.plannedComputeBytes], [t.census.bytes, t.census.count, t.plannedComputeBytes]);
  assert.equal(p.flashAttn, false, 'flash attention is off by default on the CPU');
  // --flash-attn on reaches the training graphs: fewer bytes, no forward softmax.
  const flash = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-merge-adapter', '--flash-attn', 'on', '--json']);
  assert.equal(flash.status, 0, flash.stderr);
  const f = JSON.parse(flash.stdout)['lora-training-step'].data;
  assert.equal(f.flashAttn, true);
  const fops = f.census.ops as { op: string; role: string }[];
  assert.ok(fops.some((o) => o.op === 'FLASH_ATTN_EXT' && o.role === 'fwd.attn') && !fops.some((o) => o.op === 'SOFT_MAX' && o.role === 'fwd.attn'), JSON.stringify(fops.filter((o) => o.role === 'fwd.attn')));
  assert.ok(f.census.bytes < p.census.bytes, `flash ${f.census.bytes} bytes vs ${p.census.bytes}`);
  // --train-fuse-adapter on reaches the step: the adapter's rows join the frozen products.
  const fused = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-fuse-adapter', 'on', '--json']);
  assert.equal(fused.status, 0, fused.stderr);
  const fu = JSON.parse(fused.stdout)['lora-training-step'].data;
  assert.equal(fu.fuseAdapter, 'on');
  assert.ok(!(fu.census.ops as { op: string; role: string }[]).some((o) => o.role === 'fwd.lora' && o.op === 'ADD'), 'no adapter output added');
  assert.equal(p.census.kernels, 'graph', "the CPU's census counts the graph's ops");
  // --train-census-kernels cuda counts the same graphs as ggml-cuda runs them: the tiny model's
  // f16 embedding table makes the LM head's products convert their input and result.
  const cudaCensus = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-merge-adapter', '--train-census-kernels', 'cuda', '--json']);
  assert.equal(cudaCensus.status, 0, cudaCensus.stderr);
  const cc = JSON.parse(cudaCensus.stdout)['lora-training-step'].data.census;
  assert.equal(cc.kernels, 'cuda');
  const converts = (cc.ops as { op: string; role: string }[]).filter((o) => o.op.startsWith('CONVERT'));
  assert.ok(converts.some((o) => o.op === 'CONVERT f16 to f32 (cuBLAS result)' && o.role === 'head.loss'), JSON.stringify(converts));
  assert.ok(!(p.census.ops as { op: string }[]).some((o) => o.op.startsWith('CONVERT')));
  assert.ok(cc.bytes > p.census.bytes, `cuda ${cc.bytes} bytes vs graph ${p.census.bytes}`);
  const cudaText = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-census-kernels', 'cuda']);
  assert.match(cudaText.stdout, /planned work \(ggml-cuda's kernels, conversions included\): [\d,]+ ops/);
  // Merged and fused: each group's backward dx from one product (a GPU's default step, by bytes).
  const joined = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '0', '--train-census', '--train-merge-adapter', '--train-fuse-adapter', 'on', '--json']);
  assert.equal(joined.status, 0, joined.stderr);
  const j = JSON.parse(joined.stdout)['lora-training-step'].data;
  assert.deepEqual([j.mergeAdapter, j.fuseAdapter], [true, 'on']);
  const dxProducts = (c: { ops: { op: string; role: string; count: number }[] }) => c.ops.filter((o) => o.role === 'bwd.W' && o.op.startsWith('MUL_MAT')).reduce((a, o) => a + o.count, 0);
  assert.ok(dxProducts(j.census) < dxProducts(p.census), `joined ${dxProducts(j.census)} dx products vs ${dxProducts(p.census)} merged alone`);
  // The fused attention backward: one node per layer in the census, its work space as asked.
  const fusedAttn = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '1', '--train-census', '--train-fused-attn-backward', '--train-attn-workspace-mib', '0.01', '--json']);
  assert.equal(fusedAttn.status, 0, fusedAttn.stderr);
  const fa = JSON.parse(fusedAttn.stdout)['lora-training-step'].data;
  assert.deepEqual([fa.fusedAttnBackward, fa.attnWorkspaceMiB, p.fusedAttnBackward], [true, 0.01, false]);
  const customs = (fa.census.ops as { op: string; count: number }[]).filter((o) => o.op === 'CUSTOM').reduce((a, o) => a + o.count, 0);
  assert.equal(customs, 2, 'one node per layer of the tiny model');
  // The SwiGLU and merge nodes: one SwiGLU node per layer in bwd.mlp, one merge per adapted
  // projection (7) in each layer's forward and recomputed pass.
  const nodes = run(['bench', '--model', model, '--no-generation', '--threads', '1', '--train-batch', '2', '--train-len', '16', '--train-steps', '1', '--train-census', '--train-merge-adapter', '--train-fused-mlp-backward', '--train-fused-merge', '--json']);
  assert.equal(nodes.status, 0, nodes.stderr);
  const fn = JSON.parse(nodes.stdout)['lora-training-step'].data;
  assert.deepEqual([fn.fusedMlpBackward, fn.fusedMerge, p.fusedMlpBackward, p.fusedMerge], [true, true, false, false]);
  const customsIn = (role: string) => (fn.census.ops as { op: string; role: string; count: number }[]).filter((o) => o.op === 'CUSTOM' && o.role === role).reduce((a, o) => a + o.count, 0);
  assert.deepEqual([customsIn('bwd.mlp'), customsIn('fwd.lora'), customsIn('re.lora')], [2, 14, 14]);
  const badWorkspace = run(['bench', '--model', model, '--no-generation', '--train-attn-workspace-mib', '-1']);
  assert.match(badWorkspace.stderr, /^rrr-native: --train-attn-workspace-mib: expected a number ≥ 0, got -1\n$/);
  const badKept = run(['bench', '--model', model, '--no-generation', '--train-kept-layers', '99']);
  assert.match(badKept.stderr, /^rrr-native: --train-kept-layers 99: the model has \d+ layers\n$/);
  // On the CPU no room is kept for cuBLAS: what the model and adapter leave is the budget.
  const tiny = run(['bench', '--model', model, '--no-generation', '--train-memory-gib', '0.0001']);
  assert.match(tiny.stderr, /^rrr-native: --train-memory-gib 0.0001: the model, the adapter and its optimizer state take [\d.]+ MiB of it before any compute buffer\n$/);
  const negative = run(['bench', '--model', model, '--no-generation', '--train-steps', '-1']);
  assert.match(negative.stderr, /^rrr-native: --train-steps: expected a whole number ≥ 0, got -1\n$/);
});

test('bench rejects bad flags and missing models with one line', async () => {
  const bad = run(['bench', '--model', join(dir, 'nope.gguf'), '--parallel', '0']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /^rrr-native: --parallel: expected a whole number ≥ 1, got 0\n$/);
  const badRest = run(['bench', '--model', join(dir, 'nope.gguf'), '--retry-rest', '0']);
  assert.match(badRest.stderr, /^rrr-native: --retry-rest: expected a whole number ≥ 1, got 0\n$/);
  const missing = run(['bench', '--model', join(dir, 'nope.gguf')]);
  assert.notEqual(missing.status, 0);
  assert.equal(missing.stderr.trim().split('\n').length, 1, missing.stderr);
  assert.match(missing.stderr, /nope\.gguf/);
  // our nodes' fast set, asked off a GPU
  const model = join(dir, 'tiny-refused.gguf');
  await makeTinyModel({ out: model });
  // (refused before the generation section runs, so the refusal is the only line)
  const cpu = run(['bench', '--model', model, '--device', 'cpu', '--prompt', '8', '--gen', '4', '--parallel', '1', '--no-reference', '--train-all-nodes']);
  assert.notEqual(cpu.status, 0);
  assert.match(cpu.stderr, /^rrr-native: --train-all-nodes: every node of ours and their waits on the device are for a GPU; this model is on CPU/);
  assert.equal(cpu.stderr.trim().split('\n').length, 1, cpu.stderr);
  const long = run(['bench', '--model', model, '--no-train', '--retry-start', '2000', '--retry-rest', '100']);
  assert.match(long.stderr, /^rrr-native: --retry-start 2000 \+ --retry-rest 100 \+ --retry-gen 32 exceeds the model's context of \d+ tokens\n$/);
  // the trainer's own refusals, said in bench's flags
  const alone = run(['bench', '--model', model, '--device', 'cpu', '--no-generation', '--train-swiglu-grad-16']);
  assert.notEqual(alone.status, 0);
  assert.match(alone.stderr, /^rrr-native: --train-swiglu-grad-16: the SwiGLU's node reads a 16-bit gradient only beside 16-bit gate and up; give --train-gate-up-16 too\n$/);
  const waits = run(['bench', '--model', model, '--device', 'cpu', '--no-generation', '--train-node-waits', 'device']);
  assert.notEqual(waits.status, 0);
  assert.match(waits.stderr, /^rrr-native: --train-node-waits: .*it needs a GPU \(this model is on CPU\) and one of our nodes \(--train-fused-attn-backward and the like\)\n$/);
});

// The sampling engine: greedy output equals libllama's token for token, shared prompts and
// wave packing change no result, seeds reproduce, samplers and stop rules behave, and the
// log-probs are the model's own.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GenerationStopped, Generator, Model, ReferenceDecoder, RrrError, logitsRow, makeTinyModel } from '../src/engine/index.js';
import type { Completion, TinyModelOptions } from '../src/engine/types.js';
import { TEST_DEVICE } from './helpers/models.js';
import { NEAR_TIE, assertGreedyAgree, deviceTol } from './helpers/tolerance.js';

const dir = mkdtempSync(join(tmpdir(), 'rrr-gen-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const made = new Map<string, Promise<string>>();
function tiny(opts: Omit<TinyModelOptions, 'out'>): Promise<string> {
  const key = JSON.stringify(opts);
  if (!made.has(key)) {
    const out = join(dir, `m${made.size}.gguf`);
    made.set(key, makeTinyModel({ ...opts, out }).then(() => out));
  }
  return made.get(key)!;
}

const TEXTS = [
  'Use 3, 5 and 7 to make 22. Show the expression.',
  'The quick brown fox jumps over the lazy dog, then',
  'Hi',
];

async function withModel<T>(opts: Omit<TinyModelOptions, 'out'>, fn: (m: Model, path: string) => Promise<T>): Promise<T> {
  const path = await tiny(opts);
  const m = await Model.load(path, { device: TEST_DEVICE });
  try {
    return await fn(m, path);
  } finally {
    m.dispose();
  }
}

const tokensOf = (cs: Completion[][]) => cs.map((g) => g.map((c) => Array.from(c.tokens)));

// Greedy completions `a` and `b` of the same requests agree (exactly on the CPU; see tolerance.ts).
async function agree(model: Model, prompts: Int32Array[], a: number[][][], b: number[][][], what: string) {
  assert.equal(a.length, b.length);
  for (let g = 0; g < a.length; g++) {
    assert.equal(a[g]!.length, b[g]!.length);
    for (let j = 0; j < a[g]!.length; j++) await assertGreedyAgree(model, prompts[g]!, a[g]![j]!, b[g]![j]!, NEAR_TIE, `${what}, request ${g} sample ${j}`);
  }
}

const parityCases: { name: string; opts: Omit<TinyModelOptions, 'out'>; flashAttn: boolean }[] = [
  { name: 'qwen2', opts: { arch: 'qwen2' }, flashAttn: false },
  { name: 'llama', opts: { arch: 'llama' }, flashAttn: false },
  { name: 'qwen3 (head dim 32)', opts: { arch: 'qwen3', headDim: 32 }, flashAttn: false },
  { name: 'qwen2, flash attention on both sides', opts: { arch: 'qwen2' }, flashAttn: true },
];

for (const c of parityCases) for (const kvLayout of ['streams', 'unified'] as const) {
  test(`greedy tokens equal libllama's: ${c.name}, ${kvLayout} KV`, async () => {
    await withModel(c.opts, async (model, path) => {
      const prompts = TEXTS.map((t) => model.tokenize(t));
      const requests = prompts.map((p, i) => ({ prompt: p, n: i + 1 }));
      const gen = await Generator.create(model, { maxSeqs: 6, nCtx: 64, kvType: 'f32', flashAttn: c.flashAttn, kvLayout });
      assert.equal(gen.info.kvLayout, kvLayout);
      const ref = await ReferenceDecoder.load(path, { f32Kv: true, flashAttn: c.flashAttn });
      try {
        const ours = await gen.generate(requests, { maxTokens: 24, temperature: 0 });
        const theirs = await ref.greedy(requests, { maxTokens: 24 });
        const a = tokensOf(ours);
        const b = theirs.tokens.map((g) => g.map((t) => Array.from(t)));
        await agree(model, prompts, a, b, 'libllama');
        assert.ok(a.flat().some((t) => t.length > 3), 'completions should not all stop at once');
        // greedy samples of one group are identical to each other
        for (const g of a) for (const s of g) assert.deepEqual(s, g[0]);
        assert.equal(gen.lastStats!.prefillTokens, prompts.reduce((n, p) => n + p.length, 0), 'each prompt is prefilled once');
      } finally {
        gen.dispose();
        ref.dispose();
      }
    });
  });
}

test("greedy tokens equal libllama's with one KV stream per sequence on both sides (batched-bench's layout)", async () => {
  await withModel({ arch: 'qwen2' }, async (model, path) => {
    const requests = TEXTS.map((t, i) => ({ prompt: model.tokenize(t), n: i + 1 }));
    const gen = await Generator.create(model, { maxSeqs: 6, nCtx: 64, kvType: 'f32', kvLayout: 'streams' });
    const ref = await ReferenceDecoder.load(path, { f32Kv: true, kvUnified: false });
    try {
      const ours = tokensOf(await gen.generate(requests, { maxTokens: 24, temperature: 0 }));
      const r = await ref.greedy(requests, { maxTokens: 24 });
      await agree(model, requests.map((q) => q.prompt), ours, r.tokens.map((g) => g.map((t) => Array.from(t))), 'libllama');
      // Six streams of at least 256 cells each: the prompt is held once per sequence.
      assert.ok(r.nCells >= 6 * 256, `${r.nCells} cells`);
    } finally {
      gen.dispose();
      ref.dispose();
    }
  });
});

test('streams layout: sequences finishing out of order and split steps give the unified layout\'s tokens', async () => {
  await withModel({ arch: 'llama' }, async (model) => {
    const texts = [...TEXTS, 'Count: one, two, three,', 'Once upon a time'];
    const requests = texts.map((t, i) => ({ prompt: model.tokenize(t), n: 1 + (i % 2) }));
    const unified = await Generator.create(model, { maxSeqs: 7, nCtx: 64, kvType: 'f32', kvLayout: 'unified' });
    const streams = await Generator.create(model, { maxSeqs: 7, nCtx: 64, kvType: 'f32', kvLayout: 'streams' });
    const split = await Generator.create(model, { maxSeqs: 7, nCtx: 64, kvType: 'f32', kvLayout: 'streams', nUbatch: 3 });
    try {
      assert.equal(streams.info.nCells, 7 * 256, 'nCtx 64 rounded up to one 256-cell tile per stream');
      const free = tokensOf(await unified.generate(requests, { maxTokens: 20, temperature: 0, ignoreEos: true }));
      // Stop on the 4th token of the second request: it leaves early while later streams go on,
      // so decode steps have empty slots between live ones.
      const stop = free[1]![0]![3]!;
      const opts = { maxTokens: 20, temperature: 0, ignoreEos: true, stopTokens: [stop] };
      const a = await unified.generate(requests, opts);
      const lengths = a.map((g) => g[0]!.tokens.length);
      assert.ok(lengths[1]! <= 4 && lengths.slice(2).some((n) => n > lengths[1]!), `lengths ${lengths.join(',')}`);
      const prompts = requests.map((q) => q.prompt);
      const b = await streams.generate(requests, opts);
      await agree(model, prompts, tokensOf(b), tokensOf(a), 'streams vs unified');
      await agree(model, prompts, tokensOf(await split.generate(requests, opts)), tokensOf(a), 'split steps vs unified');
      // Log-probs of the completions both layouts decoded alike (all of them on the CPU).
      let d = 0, compared = 0;
      a.flat().forEach((c, i) => {
        const o = b.flat()[i]!;
        if (o.tokens.join() !== c.tokens.join()) return;
        compared++;
        c.logprobs.forEach((x, t) => { d = Math.max(d, Math.abs(x - o.logprobs[t]!)); });
      });
      assert.ok(compared > a.flat().length / 2, `only ${compared} completions decoded alike`);
      assert.ok(d < deviceTol(1e-4, 2e-2), `log-prob difference ${d}`);
    } finally {
      unified.dispose();
      streams.dispose();
      split.dispose();
    }
  });
});

test("streams layout: prompts of several lengths share prefill graphs and give libllama's tokens", async () => {
  await withModel({ arch: 'qwen2' }, async (model, path) => {
    // Twelve prompts from 1 to 40-odd tokens, one of them long beside short ones; groups of
    // one and two samples, so both the shared-slot prefill and the prompt copies run.
    const base = `${TEXTS[0]} ${TEXTS[1]}`;
    const texts = Array.from({ length: 12 }, (_, i) => (i === 5 ? `${base} ${base}` : base.slice(0, 4 + 7 * i)));
    const requests = texts.map((t, i) => ({ prompt: model.tokenize(t), n: 1 + (i % 2) }));
    const lengths = requests.map((q) => q.prompt.length);
    assert.ok(Math.min(...lengths) <= 2 && Math.max(...lengths) >= 40, `lengths ${lengths.join(',')}`);
    const prompts = requests.map((q) => q.prompt);
    const total = lengths.reduce((a, b) => a + b, 0);
    const ref = await ReferenceDecoder.load(path, { f32Kv: true, kvUnified: false });
    try {
      const theirs = (await ref.greedy(requests, { maxTokens: 12 })).tokens.map((g) => g.map((t) => Array.from(t)));
      for (const nUbatch of [512, 16]) {
        const gen = await Generator.create(model, { maxSeqs: 18, nCtx: 128, kvType: 'f32', kvLayout: 'streams', nUbatch });
        try {
          const ours = tokensOf(await gen.generate(requests, { maxTokens: 12, temperature: 0 }));
          await agree(model, prompts, ours, theirs, `nUbatch ${nUbatch}`);
          const st = gen.lastStats!;
          assert.equal(st.prefillTokens, total);
          // One graph per prompt was the old way; batches now hold many streams' prompts, up
          // to nUbatch tokens, padding included.
          const most = nUbatch === 512 ? 2 : Math.ceil(total / nUbatch) + 4;
          assert.ok(st.prefillSteps <= most, `${st.prefillSteps} prefill graphs for ${total} tokens in batches of ${nUbatch}`);
        } finally {
          gen.dispose();
        }
      }
    } finally {
      ref.dispose();
    }
  });
});

test('suffixes: a shared start prefilled once, then each sample its own rest, gives the whole prompts\' tokens', async () => {
  await withModel({ arch: 'llama' }, async (model) => {
    // Two groups of retries-like prompts: one start, then rests of different lengths.
    const starts = [TEXTS[0]!, TEXTS[1]!].map((t) => model.tokenize(t));
    const rests = [
      ['a', ' cat sat on the mat and', ' 7', ' then three more words'].map((t) => model.tokenize(t)),
      [' x y z', ' no', ' and so on, and so on'].map((t) => model.tokenize(t)),
    ];
    const whole = starts.flatMap((s, g) => rests[g]!.map((r) => Int32Array.from([...s, ...r])));
    const grouped = starts.map((prompt, g) => ({ prompt, suffixes: rests[g]! }));
    const prefixTokens = starts.reduce((a, s) => a + s.length, 0);
    const restTokens = rests.flat().reduce((a, r) => a + r.length, 0);
    for (const opts of [{ temperature: 0 }, { temperature: 0, repeatPenalty: 1.5, repeatLastN: 64 }]) {
      for (const [kvLayout, maxSeqs] of [['streams', 7], ['unified', 7], ['streams', 2], ['unified', 3]] as const) {
        const gen = await Generator.create(model, { maxSeqs, nCtx: 96, kvType: 'f32', kvLayout });
        try {
          const o = { maxTokens: 12, ignoreEos: true, ...opts };
          const alone = (await gen.generate(whole.map((prompt) => ({ prompt })), o)).map((c) => c[0]!);
          const shared = await gen.generate(grouped, o);
          assert.deepEqual(shared.map((g) => g.length), [4, 3]);
          const what = `${kvLayout}, maxSeqs ${maxSeqs}, repeat penalty ${opts.repeatPenalty ?? 1}`;
          await agree(model, whole, shared.flat().map((c) => [Array.from(c.tokens)]), alone.map((c) => [Array.from(c.tokens)]), what);
          if (maxSeqs === 7) assert.equal(gen.lastStats!.prefillTokens, prefixTokens + restTokens, `${what}: each start prefilled once`);
          // Log-probs of the completions decoded alike: most of them (all on the CPU), so the check compares something.
          let compared = 0;
          shared.flat().forEach((c, i) => {
            if (c.tokens.join() !== alone[i]!.tokens.join()) return;
            compared++;
            c.logprobs.forEach((x, t) => assert.ok(Math.abs(x - alone[i]!.logprobs[t]!) < deviceTol(1e-4, 2e-2), `${what}: log-prob ${i}/${t}`));
          });
          assert.ok(compared > alone.length / 2, `${what}: only ${compared} of ${alone.length} completions decoded alike`);
        } finally {
          gen.dispose();
        }
      }
    }
  });
});

test('a group split across waves keeps its samples in order; suffixes between plain groups keep the padding cap', async () => {
  await withModel({ arch: 'qwen2' }, async (model) => {
    // First fit puts the group's second chunk (samples 3, 4) into the first wave, beside the
    // one-sample request, and its first chunk into the second.
    const prompt = model.tokenize(TEXTS[1]!);
    const suffixes = [' one', ' two two', ' three', ' four four four', ' five'].map((t) => model.tokenize(t));
    const requests = [{ prompt: model.tokenize('Hi'), n: 1 }, { prompt, suffixes }];
    const whole = suffixes.map((s) => Int32Array.from([...prompt, ...s]));
    const gen = await Generator.create(model, { maxSeqs: 3, nCtx: 64, kvType: 'f32' });
    try {
      const split = await gen.generate(requests, { maxTokens: 6, temperature: 0, ignoreEos: true });
      assert.equal(gen.lastStats!.waves, 2);
      const alone = await gen.generate(whole.map((p) => ({ prompt: p })), { maxTokens: 6, temperature: 0, ignoreEos: true });
      await agree(model, whole, split[1]!.map((c) => [Array.from(c.tokens)]), alone.map((g) => [Array.from(g[0]!.tokens)]), 'split group');
      assert.ok(new Set(split[1]!.map((c) => c.tokens.join())).size > 2, 'the samples differ, so an order mix-up would show');
    } finally {
      gen.dispose();
    }
    // A group with suffixes as sequences 0 and 61, 60 one-token prompts between: its two
    // 40-token suffixes span 62 streams, which one 512-token batch cannot pad.
    const wide = await Generator.create(model, { maxSeqs: 62, nCtx: 64, kvType: 'f32', kvLayout: 'streams' });
    try {
      const long = (k: number) => Array.from({ length: 40 }, (_, i) => 1000 + 7 * k + i);
      await wide.generate([{ prompt: [1, 2, 3], suffixes: [long(0), long(1)] }, ...Array.from({ length: 60 }, (_, i) => ({ prompt: [5 + i] }))], { maxTokens: 2, temperature: 0 });
      assert.equal(wide.lastStats!.prefillSteps, 3, 'the prompts in one graph, each suffix in its own');
    } finally {
      wide.dispose();
    }
  });
});

test('log-probs are log-softmax of the model logits at the sampled tokens', async () => {
  // f32 end to end: with a 16-bit output table ggml's CPU rounds the last hidden state to 16 bits
  // before the product, and a value on a rounding edge can land either side in the decode graph
  // and in forward's, moving a log-prob by up to about 6e-4.
  await withModel({ arch: 'qwen2', embdType: 'f32' }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 2, nCtx: 64, kvType: 'f32' });
    try {
      const prompt = model.tokenize(TEXTS[0]!);
      // Temperature 1 takes the draw's own normaliser as the log-prob's; 0.8 takes the row's.
      for (const temperature of [0.8, 1.0]) {
        const [[c]] = (await gen.generate([{ prompt }], { maxTokens: 8, temperature, seed: 7, ignoreEos: true })) as [[Completion]];
        assert.equal(c.tokens.length, 8);
        const full = Int32Array.from([...prompt, ...c.tokens]);
        const l = await model.forward([full]);
        for (let t = 0; t < c.tokens.length; t++) {
          const row = logitsRow(l, prompt.length - 1 + t);
          let mx = -Infinity;
          for (const v of row) mx = Math.max(mx, v);
          let s = 0;
          for (const v of row) s += Math.exp(v - mx);
          const want = row[c.tokens[t]!]! - mx - Math.log(s);
          assert.ok(Math.abs(c.logprobs[t]! - want) < deviceTol(2e-5, 2e-2), `T ${temperature}, token ${t}: ${c.logprobs[t]} vs ${want}`);
        }
      }
    } finally {
      gen.dispose();
    }
  });
});

// Sample j of request i draws from a random stream keyed by (seed, i, j) alone. Bit-exact
// equality across different batch shapes is only asserted for greedy decoding: float rounding
// in the matmuls depends on how many rows a batch has (as in llama.cpp), and near-flat random
// models turn the tiniest difference into another sample.
test('seeds reproduce; batch neighbours and wave packing change no greedy result', async () => {
  await withModel({ arch: 'llama' }, async (model) => {
    const a = model.tokenize(TEXTS[0]!);
    const b = model.tokenize(TEXTS[1]!);
    const sampled = { maxTokens: 12, temperature: 1.0, topP: 0.95, seed: 1234, ignoreEos: true };
    const greedy = { maxTokens: 12, temperature: 0, ignoreEos: true };
    const reqs = [{ prompt: a, n: 5 }, { prompt: b, n: 3 }];
    const big = await Generator.create(model, { maxSeqs: 8, nCtx: 64 });
    const small = await Generator.create(model, { maxSeqs: 2, nCtx: 64 });
    try {
      const first = tokensOf(await big.generate(reqs, sampled));
      const again = tokensOf(await big.generate(reqs, sampled));
      assert.deepEqual(again, first, 'same seed, same completions');
      const distinct = new Set(first[0]!.map((t) => t.join(',')));
      assert.ok(distinct.size > 1, 'samples of one group differ from each other');
      const other = tokensOf(await big.generate(reqs, { ...sampled, seed: 99 }));
      assert.notDeepEqual(other[0], first[0], 'another seed gives other samples');
      const wavesSampled = tokensOf(await small.generate(reqs, sampled));
      assert.equal(small.lastStats!.waves, 4);
      assert.deepEqual(wavesSampled.map((g) => g.map((t) => t.length)), first.map((g) => g.map(() => 12)));
      assert.deepEqual(tokensOf(await small.generate(reqs, sampled)), wavesSampled, 'waves reproduce too');

      const g = tokensOf(await big.generate(reqs, greedy));
      assert.deepEqual(tokensOf(await big.generate([reqs[0]!], greedy))[0], g[0], 'a request does not depend on its batch neighbours');
      assert.deepEqual(tokensOf(await small.generate(reqs, greedy)), g, 'splitting into waves of 2 sequences changes nothing');
    } finally {
      big.dispose();
      small.dispose();
    }
  });
});

test('top-p draws only from the nucleus: the fewest most likely tokens holding p of the mass', async () => {
  // A sharper random model (output gain 1.5): nuclei of about a hundred tokens, so the cut
  // falls inside a histogram bucket with candidates above it.
  await withModel({ arch: 'qwen2', outputGain: 1.5 }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 6, nCtx: 64, kvType: 'f32' });
    try {
      const prompt = model.tokenize(TEXTS[1]!);
      for (const [T, topP] of [[1.0, 0.5], [0.7, 0.9]] as const) {
        const out = await gen.generate([{ prompt, n: 6 }], { maxTokens: 6, temperature: T, topP, seed: 21, ignoreEos: true });
        let sizes = 0;
        for (const c of out[0]!) {
          const l = await model.forward([Int32Array.from([...prompt, ...c.tokens])]);
          for (let t = 0; t < c.tokens.length; t++) {
            const row = Array.from(logitsRow(l, prompt.length - 1 + t));
            const mx = row.reduce((a, b) => Math.max(a, b), -Infinity);
            const p = row.map((v) => Math.exp((v - mx) / T));
            const total = p.reduce((a, b) => a + b, 0);
            const order = p.map((_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
            // Nucleus with a hair of slack for float rounding at its edge.
            const nucleus = new Set<number>();
            for (let acc = 0, k = 0; acc < (topP + 1e-4) * total; k++) {
              nucleus.add(order[k]!);
              acc += p[order[k]!]!;
            }
            sizes += nucleus.size;
            assert.ok(nucleus.has(c.tokens[t]!), `T ${T}, top-p ${topP}, step ${t}: token ${c.tokens[t]} outside a ${nucleus.size}-token nucleus`);
          }
        }
        assert.ok(sizes > 6 * 6 * 2, `nuclei should hold several tokens (total ${sizes})`);
        assert.ok(new Set(out[0]!.map((c) => c.tokens.join(','))).size > 1, 'samples differ');
      }
    } finally {
      gen.dispose();
    }
  });
});

test('top-k = 1 equals greedy; top-k, min-p and repetition penalty shape the draw', async () => {
  await withModel({ arch: 'qwen2' }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 4, nCtx: 96 });
    try {
      const prompt = model.tokenize(TEXTS[1]!);
      const greedy = await gen.generate([{ prompt, n: 2 }], { maxTokens: 16, temperature: 0, ignoreEos: true });
      const k1 = await gen.generate([{ prompt, n: 2 }], { maxTokens: 16, temperature: 1.3, topK: 1, seed: 5, ignoreEos: true });
      assert.deepEqual(tokensOf(k1), tokensOf(greedy));
      assert.deepEqual(Array.from(k1[0]![0]!.logprobs), Array.from(greedy[0]![0]!.logprobs));

      // A huge repetition penalty forbids repeating any token of the window (prompt included).
      const rp = await gen.generate([{ prompt, n: 3 }], { maxTokens: 20, temperature: 0, repeatPenalty: 1e9, repeatLastN: 200, ignoreEos: true });
      for (const c of rp[0]!) {
        const seen = new Set(prompt);
        for (const t of c.tokens) {
          assert.ok(!seen.has(t), `token ${t} repeated despite the penalty`);
          seen.add(t);
        }
      }
      // Min-p 1 keeps only the most likely token: greedy again.
      const mp = await gen.generate([{ prompt, n: 2 }], { maxTokens: 16, temperature: 1, minP: 1, seed: 3, ignoreEos: true });
      assert.deepEqual(tokensOf(mp), tokensOf(greedy));
      // Sampled tokens under top-k = 3 are among the 3 most likely of the model's distribution.
      const tk = await gen.generate([{ prompt, n: 4 }], { maxTokens: 6, temperature: 2, topK: 3, seed: 11, ignoreEos: true });
      for (const c of tk[0]!) {
        const l = await model.forward([Int32Array.from([...prompt, ...c.tokens])]);
        c.tokens.forEach((tok, t) => {
          const row = logitsRow(l, prompt.length - 1 + t);
          // On a GPU the decode and this forward pass round differently: a near-tie may swap ranks.
          const higher = row.filter((v) => v > row[tok]! + deviceTol(0, NEAR_TIE)).length;
          assert.ok(higher < 3, `token ${t} ranked ${higher + 1} under top-k 3`);
        });
      }
    } finally {
      gen.dispose();
    }
  });
});

test('stops: max tokens, stop strings, stop tokens, each sequence on its own', async () => {
  await withModel({ arch: 'qwen2' }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 4, nCtx: 96 });
    try {
      const prompt = model.tokenize(TEXTS[0]!);
      const [[free]] = (await gen.generate([{ prompt }], { maxTokens: 30, temperature: 0, ignoreEos: true })) as [[Completion]];
      assert.equal(free.finishReason, 'length');
      assert.equal(free.tokens.length, 30);
      assert.equal(free.text, model.detokenize(free.tokens));

      // Stop string taken from the middle of the free text.
      // (plain ASCII, so the JS string and the native bytes agree).
      let cut = Math.floor(free.text.length / 2);
      while (cut > 0 && !/^[\x21-\x7e]{3}$/.test(free.text.slice(cut, cut + 3))) cut--;
      const stop = free.text.slice(cut, cut + 3);
      assert.equal(stop.length, 3, `no ASCII run in ${JSON.stringify(free.text)}`);
      const [[s]] = (await gen.generate([{ prompt }], { maxTokens: 30, temperature: 0, stop: [stop], ignoreEos: true })) as [[Completion]];
      assert.equal(s.finishReason, 'stop');
      assert.equal(s.text, free.text.slice(0, free.text.indexOf(stop)));
      assert.ok(s.tokens.length < 30);
      assert.deepEqual(Array.from(s.tokens), Array.from(free.tokens.slice(0, s.tokens.length)));

      // Stop token: the 5th generated token ends generation at its first occurrence.
      const tok = free.tokens[4]!;
      const at = free.tokens.indexOf(tok);
      const [[t]] = (await gen.generate([{ prompt }], { maxTokens: 30, temperature: 0, stopTokens: [tok], ignoreEos: true })) as [[Completion]];
      assert.equal(t.finishReason, 'stop');
      assert.equal(t.tokens.length, at + 1);
      assert.equal(t.text, model.detokenize(free.tokens.slice(0, at)));

      // Sampled sequences of one group stop independently; progress counts every token.
      let last = 0;
      const ticks: number[] = [];
      const res = await gen.generate([{ prompt, n: 4 }], {
        maxTokens: 25, temperature: 1.5, seed: 2, stop: [' '], onProgress: (n) => { ticks.push(n); last = n; },
      });
      const lens = res[0]!.map((c) => c.tokens.length);
      assert.equal(last, lens.reduce((a, b) => a + b, 0));
      assert.ok(ticks.every((v, i) => i === 0 || v >= ticks[i - 1]!));
      for (const c of res[0]!) assert.ok(c.finishReason !== 'stop' || !c.text.includes(' '));
    } finally {
      gen.dispose();
    }
  });
});

test('KV cache size follows maxSeqs × nCtx in 256-cell tiles; bad input gives one-line errors naming the value', async () => {
  await withModel({ arch: 'qwen2' }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 3, nCtx: 40 });
    const i = model.info;
    assert.equal(gen.info.nCells, 3 * 256, 'three streams of nCtx 40, each rounded up to 256 cells');
    assert.equal(gen.info.kvLayout, 'streams');
    assert.equal(gen.info.kvBytes, 2 * i.nLayer * 3 * 256 * i.nHeadKv * i.headDim * 2);
    const prompt = model.tokenize(TEXTS[0]!);
    await assert.rejects(gen.generate([{ prompt }], { maxTokens: 40 }), (e: Error) =>
      e instanceof RrrError && e.message === `context overflow: request 0 has a ${prompt.length}-token prompt + maxTokens 40 = ${prompt.length + 40} > nCtx 40`);
    await assert.rejects(gen.generate([{ prompt }], { maxTokens: 4, temperature: -1 }), (e: Error) => e instanceof RrrError && /^temperature: /.test(e.message));
    await assert.rejects(gen.generate([{ prompt }], { maxTokens: 4, topP: 0 }), (e: Error) => e instanceof RrrError && /^topP: /.test(e.message));
    await assert.rejects(gen.generate([{ prompt }], { maxTokens: 0 }), (e: Error) => e instanceof RrrError && /^maxTokens: /.test(e.message));
    await assert.rejects(gen.generate([{ prompt: [1, 999999] }], { maxTokens: 2 }), /outside the vocabulary/);
    await assert.rejects(gen.generate([{ prompt, suffixes: [[5], [6, 999999]] }], { maxTokens: 2 }), /^RrrError: request 0: token id 999999 is outside the vocabulary|request 0: token id 999999/);
    await assert.rejects(gen.generate([{ prompt, suffixes: [[5], []] }], { maxTokens: 2 }), (e: Error) => e instanceof RrrError && e.message === 'request 0: suffix 1 is empty');
    for (const suffixes of [[], 'abc', null]) {
      await assert.rejects(gen.generate([{ prompt, suffixes: suffixes as unknown as number[][] }], { maxTokens: 2 }), (e: Error) =>
        e instanceof RrrError && e.message === 'request 0: suffixes must be a non-empty array, one per sample');
    }
    await assert.rejects(gen.generate([{ prompt, suffixes: [[5], null as unknown as number[]] }], { maxTokens: 2 }), (e: Error) =>
      e instanceof RrrError && e.message === 'request 0: suffix 1: expected an Int32Array or an array of token ids, got null');
    await assert.rejects(gen.generate([{ prompt, suffixes: [[5], 'hello' as unknown as number[]] }], { maxTokens: 2 }), (e: Error) =>
      e instanceof RrrError && e.message === 'request 0: suffix 1: expected an Int32Array or an array of token ids, got string');
    await assert.rejects(gen.generate([{ prompt: [1, 3.7] }], { maxTokens: 2 }), (e: Error) => e instanceof RrrError && e.message === 'request 0: prompt: token 1 is 3.7, not a token id');
    await assert.rejects(gen.generate([{ prompt: [NaN] }], { maxTokens: 2 }), (e: Error) => e instanceof RrrError && e.message === 'request 0: prompt: token 0 is NaN, not a token id');
    await assert.rejects(gen.generate([{ prompt, n: 3, suffixes: [[5], [6]] }], { maxTokens: 2 }), (e: Error) =>
      e instanceof RrrError && e.message === 'request 0: 2 suffixes for n = 3 samples');
    await assert.rejects(gen.generate([{ prompt, suffixes: [[5], Array(30).fill(5)] }], { maxTokens: 4 }), (e: Error) =>
      e instanceof RrrError && e.message === `context overflow: request 0 has a ${prompt.length + 30}-token prompt + maxTokens 4 = ${prompt.length + 34} > nCtx 40`);
    await assert.rejects(Generator.create(model, { maxSeqs: 1, nCtx: 1 << 20 }), /nCtx: .*training context/);
    await assert.rejects(Generator.create(model, { maxSeqs: 3, nCtx: 40, nCells: 50, kvLayout: 'streams' }), (e: Error) =>
      e instanceof RrrError && /^nCells: 50 sizes a unified KV cache; the streams layout holds maxSeqs × nCtx = 120 cells/.test(e.message));
    await assert.rejects(Generator.create(model, { maxSeqs: 3, nCtx: 40, kvLayout: 'paged' as 'auto' }), /^RrrError: kvLayout: unknown layout 'paged'|kvLayout: unknown layout 'paged'/);
    const small = await Generator.create(model, { maxSeqs: 3, nCtx: 40, nCells: 50 });
    assert.equal(small.info.kvLayout, 'unified', 'nCells sizes a unified cache');
    assert.equal(small.info.nCells, 256);
    small.dispose();
    gen.dispose();
    await assert.rejects(gen.generate([{ prompt }], { maxTokens: 2 }), /generator has been disposed/);
  });
});

test('an aborted signal ends generate after the current step; the generator then runs as fresh', async () => {
  await withModel({ arch: 'qwen2' }, async (model) => {
    const gen = await Generator.create(model, { maxSeqs: 4, nCtx: 512, kvType: 'f32' });
    try {
      const requests = TEXTS.slice(0, 3).map((t) => ({ prompt: model.tokenize(t) }));
      const opts = { maxTokens: 400, temperature: 0, ignoreEos: true };
      const whole = await gen.generate(requests, opts);
      const stopper = new AbortController();
      let seen = 0;
      const stopped = gen.generate(requests, {
        ...opts,
        signal: stopper.signal,
        onProgress: (n) => {
          seen = n;
          if (n > 0) stopper.abort();
        },
      });
      await assert.rejects(stopped, (e: unknown) => e instanceof GenerationStopped && /^generation stopped on request$/.test((e as Error).message));
      // It ended within a few steps of the abort, not after the 1,200 tokens asked for.
      assert.ok(seen > 0 && seen < 100, `tokens generated before it ended: ${seen}`);
      assert.deepEqual(tokensOf(await gen.generate(requests, opts)), tokensOf(whole));
      // An aborted signal stops a call before it starts; a signal aborted after its call ended
      // does not touch the next call.
      await assert.rejects(gen.generate(requests, { ...opts, signal: stopper.signal }), GenerationStopped);
      const late = new AbortController();
      await gen.generate(requests, { ...opts, maxTokens: 2, signal: late.signal });
      late.abort();
      assert.deepEqual(tokensOf(await gen.generate(requests, opts)), tokensOf(whole));
    } finally {
      gen.dispose();
    }
  });
});

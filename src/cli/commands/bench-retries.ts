// The bench section of RRR's retry pass: T failed tasks × G reflections, each retry prompt the
// task's own start (first prompt, first answer, reflection request) plus one sample's rest
// (its reflection and the retry instruction). Timed three ways in one run: our generator with
// the start shared (GenerateRequest.suffixes), our generator with one whole prompt per retry
// (as the loop asked before), and libllama with the same whole prompts.
import { Generator } from '../../engine/generator.js';
import { ReferenceDecoder } from '../../engine/reference-decoder.js';
import { RrrError } from '../../engine/errors.js';
import type { Model } from '../../engine/model.js';
import { Progress, formatRate } from '../progress.js';
import { flashAttnOption } from '../step-flags.js';
import { repeatedText } from './bench-text.js';
import type { BenchSection } from './bench.js';

export interface RetryBenchArgs {
  retries: boolean;
  'retry-tasks': number;
  'retry-group': number;
  'retry-start': number;
  'retry-rest': number;
  'retry-gen': number;
}

/** Distinct ordinary-text windows of a long token run: one per task start and one per rest. */
function windows(model: Model, count: number, len: number, offset: number): Int32Array[] {
  const text = 'Reflect on what went wrong: the call named the wrong tool, the argument city was missing, and the date format was off by one. ';
  const run = repeatedText(model, text, offset + count * (len + 7) + len);
  // A stride that is not a multiple of the text's length gives each window another phase.
  return Array.from({ length: count }, (_, k) => run.slice(offset + k * (len + 7), offset + k * (len + 7) + len));
}

type Timing = { promptTokens: number; prefillSteps?: number; prefillMs: number; decodeMs: number; ms: number; tokens: Int32Array[] };

export const retriesSection: BenchSection = {
  key: 'retries',
  async run({ model, args }) {
    const a = args as typeof args & RetryBenchArgs;
    const title = 'RRR retry pass';
    if (!args.generation || !a.retries) {
      return { title, headers: ['workload', 'ms'], rows: [[`skipped (${!args.generation ? '--no-generation' : '--no-retries'})`, '-']], notes: [], data: null };
    }
    const T = a['retry-tasks'], G = a['retry-group'], S = a['retry-start'], R = a['retry-rest'], N = a['retry-gen'];
    const starts = windows(model, T, S, 0);
    const rests = windows(model, T * G, R, 3);
    const shared = starts.map((prompt, t) => ({ prompt, suffixes: rests.slice(t * G, (t + 1) * G) }));
    const whole = starts.flatMap((s, t) => rests.slice(t * G, (t + 1) * G).map((r) => ({ prompt: Int32Array.from([...s, ...r]) })));
    const wholeTokens = T * G * (S + R);
    const deviceSampling = args['device-sampling'] === 'auto' ? undefined : args['device-sampling'] === 'on';
    let gen: Generator;
    try {
      gen = await Generator.create(model, {
        maxSeqs: T * G,
        nCtx: S + R + N,
        kvLayout: args['kv-layout'],
        kvType: args['kv-type'],
        flashAttn: flashAttnOption(args['flash-attn']),
        deviceSampling,
      });
    } catch (e) {
      if (!(e instanceof RrrError)) throw e;
      throw new RrrError(`--retry-tasks ${T} × --retry-group ${G} = ${T * G} sequences of ${S + R + N} tokens: ${e.message}`);
    }
    const flashAttn = gen.info.flashAttn;
    const referenceKv = args['reference-kv'] ?? args['kv-layout'];
    const ref = args.reference
      ? await ReferenceDecoder.load(model.info.path, { gpu: model.info.gpu, threads: args.threads, f32Kv: args['kv-type'] === 'f32', flashAttn, kvUnified: referenceKv === 'unified' })
      : undefined;
    const progress = new Progress('retries', args.repeat * (ref ? 3 : 2), { unit: 'run' });
    let ours: Timing | undefined, oursWhole: Timing | undefined, theirs: Timing | undefined;
    const best = (x: Timing | undefined, y: Timing) => (x && x.ms <= y.ms ? x : y);
    const opts = { maxTokens: N, temperature: 0, ignoreEos: true };
    try {
      // Warm-up: first touches of weights and thread pools belong to neither way.
      await gen.generate([shared[0]!], opts);
      await ref?.greedy([whole[0]!], { maxTokens: 2, ignoreEos: true });
      let done = 0;
      // Best of --repeat, the three ways alternating, so a busy machine penalises all alike.
      for (let rep = 0; rep < args.repeat; rep++) {
        for (const [way, requests] of [['shared start', shared], ['whole prompts', whole]] as const) {
          progress.update(done++, `ours, ${way}`);
          const t0 = performance.now();
          const out = await gen.generate(requests, opts);
          const ms = performance.now() - t0;
          const st = gen.lastStats!;
          const r: Timing = { promptTokens: st.prefillTokens, prefillSteps: st.prefillSteps, prefillMs: st.prefillMs, decodeMs: st.decodeMs, ms, tokens: out.flat().map((c) => c.tokens) };
          if (way === 'shared start') ours = best(ours, r);
          else oursWhole = best(oursWhole, r);
        }
        if (ref) {
          progress.update(done++, 'llama.cpp, whole prompts');
          const t0 = performance.now();
          const r = await ref.greedy(whole, { maxTokens: N, ignoreEos: true });
          const ms = performance.now() - t0;
          theirs = best(theirs, { promptTokens: r.stats.prefillTokens, prefillMs: r.stats.prefillMs, decodeMs: r.stats.decodeMs, ms, tokens: r.tokens.flat() });
        }
      }
      progress.finish();
    } finally {
      gen.dispose();
      ref?.dispose();
    }
    const same = (x: Timing) => x.tokens.filter((t, i) => t.length === ours!.tokens[i]!.length && t.every((v, k) => v === ours!.tokens[i]![k])).length;
    const row = (name: string, x: Timing) => [
      name,
      x.promptTokens,
      x.prefillSteps ?? '-',
      x.prefillMs.toFixed(0),
      formatRate((1000 * wholeTokens) / x.prefillMs),
      x.decodeMs.toFixed(0),
      x.ms.toFixed(0),
      `${(x.ms / ours!.ms).toFixed(2)}x`,
      x === ours ? '-' : `${same(x)}/${T * G}`,
    ];
    const rows = [row('ours, shared start', ours!), row('ours, whole prompts', oursWhole!), ...(theirs ? [row('llama.cpp, whole prompts', theirs)] : [])];
    const strip = (x: Timing | undefined) => x && { promptTokens: x.promptTokens, prefillSteps: x.prefillSteps, prefillMs: x.prefillMs, decodeMs: x.decodeMs, ms: x.ms };
    return {
      title: `${title}: ${T} tasks × ${G} retries, each a ${S}-token start of its task + a ${R}-token rest of its own, ${N} new tokens (greedy, EOS ignored)`,
      headers: ['way', 'prompt tokens read', 'prefill graphs', 'prefill ms', 'retry-prompt tok/s', 'decode ms', 'pass ms', 'vs shared start', 'same tokens'],
      rows,
      notes: [
        `retry-prompt tok/s = the ${wholeTokens} tokens of all retry prompts over the prefill time; pass ms = the whole generate call, as the loop waits for it`,
        `KV cache ${args['kv-type']}, ours ${args['kv-layout']}, llama.cpp ${referenceKv}; flash attention ${flashAttn ? 'on' : 'off'}; best of ${args.repeat} run(s)`,
      ],
      data: { tasks: T, group: G, start: S, rest: R, gen: N, ours: strip(ours), oursWhole: strip(oursWhole), llamaCpp: strip(theirs), sameTokensWhole: same(oursWhole!), ...(theirs && { sameTokensLlamaCpp: same(theirs) }) },
    };
  },
};

// Batched sampling over a loaded Model. Requests are groups (one prompt, n samples); the native
// engine prefills each prompt once and decodes all samples together. Workloads larger than
// the cache run in waves, packed here; every sample draws from its own random stream keyed by
// (seed, request, sample), so packing changes no draw. (Greedy output is identical however
// requests are packed; a sampled token can still differ where batch-shape-dependent float
// rounding in the matmuls tips a draw, as in llama.cpp.)
import { fromNative, GenerationStopped, RrrError } from './errors.js';
import type { Model } from './model.js';
import type { RawGenerator, RawGroup, RawTrainer } from './native.js';
import { addon } from './native.js';
import type { Completion, GenerateOptions, GenerateRequest, GenerateStats, GeneratorInfo, GeneratorOptions } from './types.js';

const DEFAULTS = { temperature: 1.0, topK: 0, topP: 1.0, minP: 0.0, repeatPenalty: 1.0, repeatLastN: 64, seed: 0 };

/** Token ids as the addon takes them; integers only (Int32Array.from would turn 3.7 into 3, 'ab' into 0s). */
function tokenIds(what: string, v: unknown): Int32Array {
  if (v instanceof Int32Array) return v;
  if (!Array.isArray(v)) throw new RrrError(`${what}: expected an Int32Array or an array of token ids, got ${v === null ? 'null' : typeof v}`);
  const bad = v.findIndex((t) => !Number.isInteger(t) || t < -(2 ** 31) || t >= 2 ** 31);
  if (bad >= 0) throw new RrrError(`${what}: token ${bad} is ${String(v[bad])}, not a token id`);
  return Int32Array.from(v as number[]);
}

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new RrrError(`${name}: expected a positive integer, got ${String(v)}`);
  }
  return v;
}

/** A request longer than the cache's nCtx (or than maxCtx, where it may grow). */
class ContextOverflow extends RrrError {
  constructor(
    readonly request: number,
    readonly prompt: number,
    readonly maxTokens: number,
    limit: string,
  ) {
    super(`context overflow: request ${request} has a ${prompt}-token prompt + maxTokens ${maxTokens} = ${prompt + maxTokens} > ${limit}`);
  }

  get needed(): number {
    return this.prompt + this.maxTokens;
  }
}

export class Generator {
  private raw: RawGenerator | undefined;
  private current: GeneratorInfo;
  /** Statistics of the latest generate() call. */
  lastStats: GenerateStats | undefined;
  /** generate() calls so far: each call's number is its ticket for the native stop(). */
  private tickets = 0;
  /** What setAdapter chose last, given again to a cache grown after it (maxCtx). */
  private adapter: RawTrainer | null = null;
  private disposed = false;
  /** A grow in progress: calls and setAdapter wait for it. */
  private growing: Promise<void> | undefined;
  /** Calls running on each native generator: one replaced by a grow is freed when its last ends. */
  private readonly running = new Map<RawGenerator, number>();

  private constructor(
    raw: RawGenerator,
    private readonly model: Model,
    private readonly opts: GeneratorOptions,
  ) {
    this.raw = raw;
    this.current = raw.info();
  }

  /** The cache as it is now: nCtx and its bytes grow where maxCtx lets a request grow them. */
  get info(): GeneratorInfo {
    return this.current;
  }

  /** Allocates the KV cache (maxSeqs × nCtx cells unless nCells says otherwise) on the model's device. */
  static async create(model: Model, opts: GeneratorOptions): Promise<Generator> {
    positiveInt('maxSeqs', opts.maxSeqs);
    positiveInt('nCtx', opts.nCtx);
    if (opts.nCells !== undefined) positiveInt('nCells', opts.nCells);
    if (opts.nUbatch !== undefined) positiveInt('nUbatch', opts.nUbatch);
    if (opts.kvLayout !== undefined && !['auto', 'unified', 'streams'].includes(opts.kvLayout)) {
      throw new RrrError(`kvLayout: unknown layout '${String(opts.kvLayout)}' (expected auto, unified or streams)`);
    }
    if (opts.maxCtx !== undefined) {
      if (positiveInt('maxCtx', opts.maxCtx) < opts.nCtx) throw new RrrError(`maxCtx: ${opts.maxCtx} is below nCtx ${opts.nCtx}`);
      if (opts.maxCtx > model.info.nCtxTrain) throw new RrrError(`maxCtx: ${opts.maxCtx} is above the model's context of ${model.info.nCtxTrain} tokens`);
      if (opts.nCells !== undefined) throw new RrrError('maxCtx: grows a cache of nCtx cells a sequence; give it without nCells');
    }
    const { maxCtx: _, ...native } = opts;
    try {
      return new Generator(await addon().NativeGenerator.create(model.nativeHandle, native), model, opts);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * A new cache of `needed` cells a sequence, in whole 256-cell tiles up to maxCtx, in place of
   * the one that was too short. Cells hold nothing between calls, and no result depends on how
   * many there are. The old cache goes first where no call is running on it (on a GPU both might
   * not fit), else when its last call ends; where the new one cannot be made, one of the old size
   * is made again, so the generator still serves what fits.
   */
  private grow(needed: number): Promise<void> {
    const run = async () => {
      const { maxCtx, ...native } = this.opts;
      const old = this.raw!;
      const make = async (nCtx: number) => {
        const raw = await addon().NativeGenerator.create(this.model.nativeHandle, { ...native, nCtx });
        raw.setAdapter(this.adapter);
        return raw;
      };
      if (!this.running.has(old)) old.dispose();
      try {
        this.raw = await make(Math.min(maxCtx!, Math.ceil(needed / 256) * 256));
      } catch (e) {
        if (!this.running.has(old)) this.raw = await make(this.current.nCtx).catch(() => undefined);
        if (!this.raw) this.disposed = true;
        throw fromNative(e);
      }
      this.current = this.raw.info();
    };
    this.growing = run().finally(() => (this.growing = undefined));
    return this.growing;
  }

  /** Once no grow is in progress (one that failed is said to the call that asked for it). */
  private async grown(): Promise<void> {
    while (this.growing) await this.growing.catch(() => undefined);
  }

  private get native(): RawGenerator {
    if (this.disposed || !this.raw) throw new RrrError('generator has been disposed');
    return this.raw;
  }

  /** Completions per request, in request order; request i gets requests[i].n of them. */
  async generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
    // Not awaited where no grow runs: the call must reach the addon before this tick ends, so it
    // takes the adapter chosen when it was made, not one a setAdapter right after it chooses.
    if (this.growing) await this.grown();
    void this.native; // refuses a disposed generator before any work
    const maxTokens = positiveInt('maxTokens', opts.maxTokens);
    const params = {
      ...DEFAULTS,
      ...definedOnly({
        temperature: opts.temperature,
        topK: opts.topK,
        topP: opts.topP,
        minP: opts.minP,
        repeatPenalty: opts.repeatPenalty,
        repeatLastN: opts.repeatLastN,
        seed: opts.seed,
      }),
      maxTokens,
      stop: opts.stop ?? [],
      stopTokens: opts.stopTokens ?? [],
      ignoreEos: opts.ignoreEos ?? false,
    };
    if (!Number.isSafeInteger(params.seed) || params.seed < 0) throw new RrrError(`seed: expected a non-negative integer, got ${params.seed}`);
    const signal = opts.signal;
    if (signal?.aborted) throw new GenerationStopped();
    let waves;
    try {
      waves = this.plan(requests, maxTokens);
    } catch (e) {
      const maxCtx = this.opts.maxCtx;
      if (!(e instanceof ContextOverflow) || maxCtx === undefined) throw e;
      if (e.needed > maxCtx) throw new ContextOverflow(e.request, e.prompt, e.maxTokens, `maxCtx ${maxCtx}`);
      if (this.growing) await this.grown();
      if (e.needed > this.current.nCtx) await this.grow(e.needed);
      waves = this.plan(requests, maxTokens);
    }
    // This call's generator to the end, and the one its stop() reaches, whatever a grow does.
    const raw = this.native;
    this.running.set(raw, (this.running.get(raw) ?? 0) + 1);
    const out: Completion[][] = requests.map(() => []);
    const stats: GenerateStats = { waves: 0, prefillTokens: 0, prefillSteps: 0, decodeTokens: 0, generated: 0, steps: 0, prefillMs: 0, decodeMs: 0, sampleMs: 0, graphSplits: 0, graphHostInputs: 0, fallbackOps: [] };
    // Native progress arrives through a thread-safe queue that may trail the result: report
    // only increases, and each wave's final count when it resolves.
    let reported = 0;
    const report = (n: number) => {
      if (opts.onProgress && n > reported) {
        reported = n;
        opts.onProgress(n);
      }
    };
    const ticket = ++this.tickets;
    const stop = () => raw.stop(ticket);
    signal?.addEventListener('abort', stop);
    try {
      for (const wave of waves) {
        if (signal?.aborted) throw new GenerationStopped();
        const base = stats.generated;
        const progress = opts.onProgress ? (n: number) => report(base + n) : undefined;
        let r;
        try {
          r = await raw.generate(wave, params, progress, ticket);
        } catch (e) {
          throw signal?.aborted ? new GenerationStopped() : fromNative(e);
        }
        // By sample number: first fit may put a group's later chunk in an earlier wave.
        wave.forEach((g, i) => r.completions[i]!.forEach((c, k) => (out[g.request]![g.firstSample + k] = c)));
        stats.waves++;
        report(base + r.stats.generated);
        for (const k of ['prefillTokens', 'prefillSteps', 'decodeTokens', 'generated', 'steps', 'prefillMs', 'decodeMs', 'sampleMs'] as const) stats[k] += r.stats[k];
        stats.graphSplits = Math.max(stats.graphSplits, r.stats.graphSplits);
        stats.graphHostInputs = Math.max(stats.graphHostInputs, r.stats.graphHostInputs);
        stats.fallbackOps = [...new Set([...stats.fallbackOps, ...r.stats.fallbackOps])].sort();
      }
    } finally {
      signal?.removeEventListener('abort', stop);
      const left = this.running.get(raw)! - 1;
      if (left > 0) this.running.set(raw, left);
      else {
        this.running.delete(raw);
        if (raw !== this.raw) raw.dispose();
      }
    }
    this.lastStats = stats;
    return out;
  }

  /**
   * Splits requests into waves that fit maxSeqs sequences and the cache's cells. A group larger
   * than one wave is split into chunks (each re-reads its prompt, and takes its samples'
   * suffixes); chunks keep their sample numbers, so the split changes no result.
   */
  private plan(requests: GenerateRequest[], maxTokens: number): RawGroup[][] {
    const { maxSeqs, nCtx, nCells, kvLayout } = this.info;
    // Streams give every sequence its own nCtx cells, so only the sequence count limits a wave.
    const suffixCells = (s: Int32Array[] | undefined) => (s ?? []).reduce((a, x) => a + x.length, 0);
    const cellsOf = (c: RawGroup) => (kvLayout === 'streams' ? c.n * nCtx : c.prompt.length + suffixCells(c.suffixes) + c.n * maxTokens);
    const chunks: RawGroup[] = [];
    let overflow: ContextOverflow | undefined;
    for (const [i, req] of requests.entries()) {
      let suffixes: Int32Array[] | undefined;
      if (req.suffixes !== undefined) {
        if (!Array.isArray(req.suffixes) || req.suffixes.length === 0) throw new RrrError(`request ${i}: suffixes must be a non-empty array, one per sample`);
        suffixes = req.suffixes.map((s, j) => {
          const t = tokenIds(`request ${i}: suffix ${j}`, s);
          if (t.length === 0) throw new RrrError(`request ${i}: suffix ${j} is empty`);
          return t;
        });
      }
      const n = req.n === undefined ? (suffixes?.length ?? 1) : positiveInt(`request ${i}: n`, req.n);
      if (suffixes && suffixes.length !== n) throw new RrrError(`request ${i}: ${suffixes.length} suffixes for n = ${n} samples`);
      const prompt = tokenIds(`request ${i}: prompt`, req.prompt);
      if (prompt.length === 0) throw new RrrError(`request ${i}: the prompt is empty`);
      const longestSuffix = Math.max(0, ...(suffixes ?? []).map((s) => s.length));
      const longest = prompt.length + longestSuffix;
      // The longest request too long is said (and grown to, within maxCtx), not the first.
      if (longest + maxTokens > nCtx) {
        if (!overflow || longest > overflow.prompt) overflow = new ContextOverflow(i, longest, maxTokens, `nCtx ${nCtx}`);
        continue;
      }
      const fit = kvLayout === 'streams' ? maxSeqs : Math.min(maxSeqs, Math.floor((nCells - prompt.length) / (longestSuffix + maxTokens)));
      if (fit < 1) {
        throw new RrrError(`request ${i}: a ${longest}-token prompt + maxTokens ${maxTokens} does not fit the KV cache's ${nCells} cells`);
      }
      for (let first = 0; first < n; first += fit) {
        const m = Math.min(fit, n - first);
        chunks.push({ prompt, n: m, request: i, firstSample: first, ...(suffixes ? { suffixes: suffixes.slice(first, first + m) } : {}) });
      }
    }
    if (overflow) throw overflow;
    // First fit: each chunk joins the first wave with room for its sequences and cells.
    const waves: { groups: RawGroup[]; seqs: number; cells: number }[] = [];
    for (const c of chunks) {
      const need = cellsOf(c);
      let w = waves.find((x) => x.seqs + c.n <= maxSeqs && x.cells + need <= nCells);
      if (!w) waves.push((w = { groups: [], seqs: 0, cells: 0 }));
      w.groups.push(c);
      w.seqs += c.n;
      w.cells += need;
    }
    return waves.map((w) => w.groups);
  }

  /**
   * Samples from base + the trainer's LoRA adapter from the next generate() call on (null: the
   * base model again); calls made before keep the adapter they were made with, and this does not
   * wait for them. The adapter is read live: optimizer steps taken later show up in later
   * generations.
   */
  setAdapter(trainer: { rawTrainer: RawTrainer } | null): void {
    // While a grow makes the new cache, the choice is kept for it (it sets this.adapter on it).
    const raw = this.growing ? undefined : this.native;
    try {
      raw?.setAdapter(trainer ? trainer.rawTrainer : null);
    } catch (e) {
      throw fromNative(e);
    }
    this.adapter = trainer ? trainer.rawTrainer : null;
  }

  /**
   * Frees the KV cache now; a generate() still running keeps it until it finishes. The
   * generator also keeps its model's native memory alive until then, even if the Model is disposed.
   */
  dispose(): void {
    this.disposed = true;
    this.raw?.dispose();
    this.raw = undefined;
  }
}

function definedOnly<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

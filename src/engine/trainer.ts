// LoRA training over a loaded Model: the adapter (A/B tensors on the model's device), AdamW state,
// and the masked advantage-weighted step. All heavy work runs off the JS thread in the addon.
//
// The loss, per batch (weights[t] belongs to token t, predicted from position t−1; t ≥ 1):
//   m_t = mask[t] ≠ 0 (or weights[t] ≠ 0 without a mask), N = Σ m_t over the whole batch,
//   lp_t = log π(token_t), ref_t = the same with the adapter off (the base model),
//   KL = Σ m_t (e^{ref_t − lp_t} − (ref_t − lp_t) − 1) / N            (k3 estimator),
//   with oldLogprobs:    ρ_t = e^{lp_t − old_t},
//                        loss = −Σ m_t min(ρ_t w_t, clip(ρ_t, 1−ε, 1+ε) w_t) / N + β·KL
//   without oldLogprobs: loss = −Σ m_t w_t lp_t / N + β·KL  (same gradient as ρ = 1)
// Gradients reach the LoRA tensors only; the global gradient norm is clipped to
// OptimizerConfig.gradClip, then AdamW (decoupled weight decay) applies the step's lr. A batch
// with N = 0 changes nothing (no optimizer step).
import { addon, type RawStepOptions, type RawTrainer, type RawTrainSequence } from './native.js';
import { fromNative, RrrError } from './errors.js';
import type { Model } from './model.js';
import type { GradientsResult, LoraConfig, LoraTarget, MemoryPlan, MergeOptions, MergeResult, OptimizerConfig, PlanOptions, StepOptions, StepResult, TrainerInfo, TrainerOptions, TrainSequence } from './types.js';

const DEFAULT_TARGETS: LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

async function call<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw fromNative(e);
  }
}

function optimizerSpec(o: OptimizerConfig): Record<string, unknown> {
  return {
    beta1: o.beta1 ?? 0.9,
    beta2: o.beta2 ?? 0.999,
    eps: o.eps ?? 1e-8,
    weightDecay: o.weightDecay ?? 0,
    gradClip: o.gradClip ?? 1,
  };
}

function rawBatch(batch: TrainSequence[]): RawTrainSequence[] {
  return batch.map((s) => ({
    tokens: s.tokens,
    weights: s.weights,
    ...(s.mask && { mask: s.mask }),
    ...(s.oldLogprobs && { oldLogprobs: s.oldLogprobs }),
  }));
}

function rawOptions(o: StepOptions): RawStepOptions {
  if (!Number.isFinite(o.lr) || o.lr < 0) throw new RrrError(`step: lr must be a finite number ≥ 0 (got ${o.lr})`);
  if (o.keptLayers !== undefined && o.keptLayers !== 'auto' && !(Number.isInteger(o.keptLayers) && o.keptLayers >= 0)) {
    throw new RrrError(`step: keptLayers must be a whole number ≥ 0 or 'auto' (got ${o.keptLayers})`);
  }
  if (o.memoryBudget !== undefined && !(Number.isFinite(o.memoryBudget) && o.memoryBudget >= 0)) {
    throw new RrrError(`step: memoryBudget must be a number of bytes ≥ 0 (got ${o.memoryBudget})`);
  }
  if (o.keptLayers === 'auto' && !o.memoryBudget) throw new RrrError("step: keptLayers 'auto' needs a memoryBudget");
  if (o.microBatchTokens !== undefined && !(Number.isInteger(o.microBatchTokens) && o.microBatchTokens >= 0)) {
    throw new RrrError(`step: microBatchTokens must be a whole number ≥ 0, 0 = the whole batch at once (got ${o.microBatchTokens})`);
  }
  return {
    lr: o.lr,
    clipEps: o.clipEps ?? 0.2,
    beta: o.beta ?? 0,
    microBatchTokens: o.microBatchTokens ?? 0,
    recompute: o.recompute ?? true,
    keptLayers: o.keptLayers ?? 0,
    memoryBudget: o.memoryBudget ?? 0,
    logitsChunkRows: o.logitsChunkRows ?? 0,
    ...(o.mergeAdapter !== undefined && { mergeAdapter: o.mergeAdapter }),
    ...(o.fuseAdapter !== undefined && { fuseAdapter: o.fuseAdapter }),
    ...(o.keptF16 !== undefined && { keptF16: o.keptF16 }),
    ...(o.keptNorms !== undefined && { keptNorms: o.keptNorms }),
    ...(o.keptSplit !== undefined && { keptSplit: o.keptSplit }),
    profile: o.profile ?? false,
  };
}

export class Trainer {
  private raw: RawTrainer | undefined;
  readonly model: Model;

  private constructor(model: Model, raw: RawTrainer) {
    this.model = model;
    this.raw = raw;
  }

  /** A new adapter (A random, B zero: the model's outputs are unchanged until the first step). */
  static async create(model: Model, lora: LoraConfig, optimizer: OptimizerConfig, options: TrainerOptions = {}): Promise<Trainer> {
    const spec = { rank: lora.rank, alpha: lora.alpha, targets: lora.targets ?? DEFAULT_TARGETS, seed: lora.seed ?? 1, dropout: lora.dropout ?? 0 };
    return new Trainer(model, await call(() => addon().NativeTrainer.create(model.rawModel, spec, optimizerSpec(optimizer), options)));
  }

  /** A trainer whose rank, alpha and targets come from an adapter GGUF, with its weights loaded. */
  static async fromAdapter(model: Model, path: string, optimizer: OptimizerConfig = { lr: 0 }, options: TrainerOptions = {}): Promise<Trainer> {
    return new Trainer(model, await call(() => addon().NativeTrainer.fromAdapter(model.rawModel, path, optimizerSpec(optimizer), options)));
  }

  /** The addon object; Model.forward takes `{ adapter: trainer }` and reads this. */
  get rawTrainer(): RawTrainer {
    if (!this.raw) throw new RrrError('trainer has been disposed');
    return this.raw;
  }

  get info(): TrainerInfo {
    return this.rawTrainer.info() as TrainerInfo;
  }

  /** One optimizer step over the batch (gradients accumulated over micro-batches). */
  async step(batch: TrainSequence[], opts: StepOptions): Promise<StepResult> {
    const o = rawOptions(opts);
    return call(() => this.rawTrainer.step(rawBatch(batch), o));
  }

  /** The loss and statistics of `step` at the current parameters, without gradients or update. */
  async evaluate(batch: TrainSequence[], opts: Omit<StepOptions, 'lr'> = {}): Promise<StepResult> {
    const o = rawOptions({ ...opts, lr: 0 });
    return call(() => this.rawTrainer.evaluate(rawBatch(batch), o));
  }

  /** Loss and gradients at the current parameters, no update (for gradient checks and debugging). */
  async gradients(batch: TrainSequence[], opts: Omit<StepOptions, 'lr'> = {}): Promise<GradientsResult> {
    const o = rawOptions({ ...opts, lr: 0 });
    return call(() => this.rawTrainer.gradients(rawBatch(batch), o));
  }

  /**
   * log π(token_t | tokens_<t) for every token (index 0 is 0), with the adapter on or off — the
   * oldLogprobs of a later step, or the base model's log-probs.
   */
  async logprobs(seqs: (Int32Array | number[])[], opts: { adapter?: boolean; microBatchTokens?: number } = {}): Promise<Float32Array[]> {
    const batch = seqs.map((s) => (s instanceof Int32Array ? s : Int32Array.from(s)));
    return call(() => this.rawTrainer.logprobs(batch, opts.adapter ?? true, opts.microBatchTokens ?? 0));
  }

  /**
   * Compute-buffer bytes a step over `batch` sequences of `len` tokens, every token trained, would
   * take with these options (micro-batching, β's base-model pass, recomputation and keptLayers
   * apply): the training graph is planned, not run, and nothing is allocated. The model's weights,
   * the adapter, the optimizer state and the kept transposed weights come on top.
   */
  async plan(batch: number, len: number, opts: PlanOptions = {}): Promise<MemoryPlan> {
    if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(len) || len < 2) {
      throw new RrrError(`plan: need a whole number of sequences ≥ 1 of ≥ 2 tokens (got ${batch} x ${len})`);
    }
    const { census, censusKernels, ...step } = opts;
    const o = { ...rawOptions({ ...step, lr: 0 }), census: census ?? false, ...(censusKernels !== undefined && { censusKernels }) };
    return call(() => this.rawTrainer.plan(batch, len, o));
  }

  /**
   * Copies of all adapter tensors by name (debugging and tests). Synchronous: on the JS thread it
   * waits for a step or a generation in flight on the same model, so call it between them.
   */
  params(): Record<string, Float32Array> {
    return this.rawTrainer.params();
  }

  /** Overwrites one adapter tensor (debugging and tests); synchronous, as params(). */
  setParam(name: string, values: Float32Array): void {
    try {
      this.rawTrainer.setParam(name, values);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Writes a LoRA GGUF that llama.cpp loads (llama_adapter_lora_init, --lora). */
  async saveAdapter(path: string): Promise<void> {
    return call(() => this.rawTrainer.saveAdapter(path));
  }

  /** Loads adapter weights saved with the same rank, alpha and targets. */
  async loadAdapter(path: string): Promise<void> {
    return call(() => this.rawTrainer.loadAdapter(path));
  }

  /** Adapter + AdamW moments + step count, for resuming exactly where training stopped. */
  async saveState(path: string): Promise<void> {
    return call(() => this.rawTrainer.saveState(path));
  }

  async loadState(path: string): Promise<void> {
    return call(() => this.rawTrainer.loadState(path));
  }

  /** Frees the adapter and optimizer memory now (a running step keeps its data until it ends). */
  dispose(): void {
    this.raw?.dispose();
    this.raw = undefined;
  }
}

/** base + adapter → one GGUF (see native/src/merge.h for the stored types). */
export async function mergeAdapter(opts: MergeOptions): Promise<MergeResult> {
  return call(() => addon().mergeAdapter(opts));
}

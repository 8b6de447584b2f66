// Loads the compiled addon and describes its raw surface. Only src/engine talks to it.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import type { BuildInfo, DeviceInfo, GenerateStats, GeneratorInfo, Logits, MemoryPlan, MergeOptions, MergeResult, StepOptions, StepResult, TrainerOptions } from './types.js';
import { RrrError } from './errors.js';

export interface RawModel {
  info(): Record<string, unknown>;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, renderSpecial: boolean): string;
  tokenCounts(texts: string[], parseSpecial: boolean): Promise<Int32Array>;
  tokenPiece(id: number, renderSpecial: boolean): string;
  chatTemplate(): string | null;
  applyChatTemplate(messages: { role: string; content: string }[], addAssistant: boolean): string;
  forward(seqs: Int32Array[], lastOnly: boolean, adapter?: RawTrainer): Promise<Logits>;
  dispose(): void;
}

export interface RawReference {
  logits(seqs: Int32Array[]): Promise<Logits>;
  setAdapter(path: string | null, scale: number): Promise<void>;
  dispose(): void;
}

export interface RawTrainSequence {
  tokens: Int32Array;
  weights: Float32Array;
  mask?: Uint8Array;
  oldLogprobs?: Float32Array;
}

export type RawStepOptions = StepOptions;

export interface RawTrainer {
  info(): { rank: number; alpha: number; targets: string[]; nParams: number; steps: number };
  step(batch: RawTrainSequence[], opts: RawStepOptions): Promise<StepResult>;
  evaluate(batch: RawTrainSequence[], opts: RawStepOptions): Promise<StepResult>;
  gradients(batch: RawTrainSequence[], opts: RawStepOptions): Promise<StepResult & { grads: Record<string, Float32Array> }>;
  logprobs(seqs: Int32Array[], withAdapter: boolean, microBatchTokens: number): Promise<Float32Array[]>;
  plan(batch: number, len: number, opts: RawStepOptions & { census: boolean; censusKernels?: string }): Promise<MemoryPlan>;
  params(): Record<string, Float32Array>;
  setParam(name: string, values: Float32Array): void;
  saveAdapter(path: string): Promise<void>;
  loadAdapter(path: string): Promise<void>;
  saveState(path: string): Promise<void>;
  loadState(path: string): Promise<void>;
  dispose(): void;
}

/** The addon reports exactly the public GeneratorInfo. */
export type RawGeneratorInfo = GeneratorInfo;

/** GenerateStats of one wave (the TS side counts the waves). */
export type RawGenerateStats = Omit<GenerateStats, 'waves'>;

export interface RawGroup {
  prompt: Int32Array;
  n: number;
  suffixes?: Int32Array[];
  /** Index of the request: with firstSample + j it keys sample j's random stream. */
  request: number;
  firstSample: number;
}

export interface RawCompletion {
  tokens: Int32Array;
  logprobs: Float32Array;
  text: string;
  finishReason: 'eos' | 'stop' | 'length';
}

export interface RawGenerator {
  info(): RawGeneratorInfo;
  generate(
    groups: RawGroup[],
    params: Record<string, unknown>,
    onProgress?: (generated: number) => void,
    /** This call's number (from 1) for stop(); 0 or absent: it cannot be stopped. */
    ticket?: number,
  ): Promise<{ completions: RawCompletion[][]; stats: RawGenerateStats }>;
  /** Ends the generate call holding `ticket` after its current step (it rejects). */
  stop(ticket: number): void;
  setAdapter(trainer: RawTrainer | null): void;
  dispose(): void;
}

export interface RawReferenceDecoder {
  greedy(
    groups: { prompt: Int32Array; n: number }[],
    opts: { maxTokens: number; ignoreEos?: boolean },
  ): Promise<{
    tokens: Int32Array[][];
    stats: { prefillTokens: number; decodeTokens: number; generated: number; prefillMs: number; decodeMs: number };
    nCells: number;
    kvBytes: number;
  }>;
  dispose(): void;
}

export interface RawAddon {
  NativeModel: { load(path: string, opts: { device?: string; threads?: number }): Promise<RawModel> };
  NativeReference: {
    load(path: string, opts: { gpu?: boolean; nCtx?: number; threads?: number; f32Kv?: boolean; flashAttn?: boolean; repack?: boolean }): Promise<RawReference>;
  };
  NativeTrainer: {
    create(model: RawModel, lora: Record<string, unknown>, opt: Record<string, unknown>, settings: TrainerOptions): Promise<RawTrainer>;
    fromAdapter(model: RawModel, path: string, opt: Record<string, unknown>, settings: TrainerOptions): Promise<RawTrainer>;
  };
  mergeAdapter(spec: MergeOptions): Promise<MergeResult>;
  NativeGenerator: {
    create(
      model: RawModel,
      opts: { maxSeqs: number; nCtx: number; nCells?: number; nUbatch?: number; kvType?: string; kvLayout?: string; flashAttn?: boolean; deviceSampling?: boolean },
    ): Promise<RawGenerator>;
  };
  NativeReferenceDecoder: {
    load(path: string, opts: { gpu?: boolean; threads?: number; f32Kv?: boolean; flashAttn?: boolean; nUbatch?: number; kvUnified?: boolean }): Promise<RawReferenceDecoder>;
  };
  devices(): DeviceInfo[];
  buildInfo(): BuildInfo;
  writeTinyModel(spec: Record<string, unknown>): Promise<number>;
}

let cached: RawAddon | undefined;

export function addon(): RawAddon {
  if (cached) return cached;
  const file = process.env.RRR_NATIVE_ADDON ?? join(packageRoot, 'build', 'Release', 'rrr_native.node');
  if (!existsSync(file)) {
    throw new RrrError(`native addon not built (${file} is missing): run \`npm install\` in ${packageRoot}`);
  }
  cached = createRequire(import.meta.url)(file) as RawAddon;
  return cached;
}

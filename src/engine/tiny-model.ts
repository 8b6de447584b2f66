// Generates small random GGUF models with a real tokenizer, so tests, the default `train`
// run and speed benchmarks need no download.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { addon } from './native.js';
import { fromNative, RrrError } from './errors.js';
import type { TinyModelOptions, TinyPreset } from './types.js';

type Shape = Required<Pick<TinyModelOptions, 'nEmbd' | 'nLayer' | 'nHead' | 'nHeadKv' | 'nFf' | 'nCtx'>> & { headDim?: number };

/** Shapes: "tiny" for tests (a few MB), the Qwen2.5 ones for speed measurements. */
export const TINY_PRESETS: Record<TinyPreset, Shape> = {
  tiny: { nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 128, nCtx: 2048 },
  'qwen2.5-0.5b': { nEmbd: 896, nLayer: 24, nHead: 14, nHeadKv: 2, nFf: 4864, nCtx: 32768 },
  'qwen2.5-1.5b': { nEmbd: 1536, nLayer: 28, nHead: 12, nHeadKv: 2, nFf: 8960, nCtx: 32768 },
};

export function defaultVocabPath(): string {
  return join(packageRoot, 'third_party', 'llama.cpp', 'models', 'ggml-vocab-qwen2.gguf');
}

/** Writes the model and resolves to its size in bytes. */
export async function makeTinyModel(opts: TinyModelOptions): Promise<number> {
  const preset = opts.preset ?? 'tiny';
  const shape = TINY_PRESETS[preset];
  if (!shape) throw new RrrError(`--preset: unknown preset '${preset}' (expected ${Object.keys(TINY_PRESETS).join(', ')})`);
  const vocab = opts.vocab ?? defaultVocabPath();
  if (!existsSync(vocab)) {
    throw new RrrError(`--vocab: ${vocab} not found (the llama.cpp source is materialised by \`npm install\`)`);
  }
  const spec = {
    arch: opts.arch ?? 'qwen2',
    vocabPath: vocab,
    outPath: resolve(opts.out),
    type: opts.type ?? (preset === 'tiny' ? 'f32' : 'f16'),
    ...(opts.embdType === undefined ? {} : { embdType: opts.embdType }),
    nEmbd: opts.nEmbd ?? shape.nEmbd,
    nLayer: opts.nLayer ?? shape.nLayer,
    nHead: opts.nHead ?? shape.nHead,
    nHeadKv: opts.nHeadKv ?? shape.nHeadKv,
    headDim: opts.headDim ?? shape.headDim ?? 0,
    nFf: opts.nFf ?? shape.nFf,
    nCtx: opts.nCtx ?? shape.nCtx,
    seed: opts.seed ?? 42,
    outputGain: opts.outputGain ?? 1,
    init: opts.init ?? 'random',
    copyOffset: opts.copyOffset ?? 13,
    ...(opts.tied === undefined ? {} : { tied: opts.tied }),
  };
  // The addon writes these as GGUF's u32 and sizes its buffer from their products: 1e12 wrapped
  // round (--ctx) or overflowed the size and aborted the process. Past the largest real models'.
  for (const [flag, v, max] of [['--embd', spec.nEmbd, 65536], ['--ff', spec.nFf, 262144], ['--head-dim', spec.headDim, 1024], ['--heads', spec.nHead, 1024], ['--kv-heads', spec.nHeadKv, 1024], ['--layers', spec.nLayer, 1024], ['--ctx', spec.nCtx, 2 ** 31 - 1]] as const) {
    if (v > max) throw new RrrError(`${flag}: at most ${max}, got ${v}`);
  }
  try {
    return await addon().writeTinyModel(spec);
  } catch (e) {
    throw fromNative(e);
  }
}

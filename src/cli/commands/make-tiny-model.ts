import type { CommandModule } from 'yargs';
import { makeTinyModel } from '../../engine/tiny-model.js';
import { RrrError } from '../../engine/errors.js';
import { integerFlag, outFileFlag, positiveFlag, seedFlag } from '../flag-checks.js';
import { TINY_PRESETS } from '../../engine/tiny-model.js';
import type { TinyPreset } from '../../engine/types.js';
import { emitJson, say } from '../output.js';
import { removeTempOnInterrupt } from '../interrupt.js';

interface Args {
  arch: 'llama' | 'qwen2' | 'qwen3';
  out: string;
  preset: TinyPreset;
  type?: string;
  'embd-type'?: 'f32' | 'f16' | 'bf16';
  embd?: number;
  layers?: number;
  heads?: number;
  'kv-heads'?: number;
  'head-dim'?: number;
  ff?: number;
  ctx?: number;
  tied?: boolean;
  seed: number;
  vocab?: string;
  init: 'random' | 'copy';
  'copy-offset'?: number;
  'output-gain'?: number;
  json: boolean;
}

export const makeTinyModelCommand: CommandModule<object, Args> = {
  command: 'make-tiny-model',
  describe: 'Write a small random-weight GGUF model with a real tokenizer and chat template (for tests, demos, benchmarks)',
  builder: (y) =>
    y
      .option('arch', { choices: ['llama', 'qwen2', 'qwen3'] as const, default: 'qwen2' as const, describe: 'architecture' })
      .option('out', { type: 'string', demandOption: true, describe: 'output .gguf path (written atomically)' })
      .option('preset', {
        choices: Object.keys(TINY_PRESETS) as TinyPreset[],
        default: 'tiny' as TinyPreset,
        describe: 'shape: tiny (about 26 MB, most of it the 152k-token vocabulary tables; tests) or a real model shape for speed measurements',
      })
      .option('type', { type: 'string', describe: 'projection weight type: f32, f16, bf16, q8_0, q4_0, q4_K (default f32 for tiny, f16 otherwise)' })
      .option('embd-type', {
        choices: ['f32', 'f16', 'bf16'] as const,
        describe: 'type of the embedding and output tables (default 16-bit: bf16 with --type bf16, else f16, as they dominate a tiny model\'s size; f32 makes the model f32 end to end)',
      })
      .option('embd', { type: 'number', describe: 'hidden size (overrides the preset)' })
      .option('layers', { type: 'number', describe: 'number of transformer blocks' })
      .option('heads', { type: 'number', describe: 'attention heads' })
      .option('kv-heads', { type: 'number', describe: 'key/value heads (grouped-query attention)' })
      .option('head-dim', { type: 'number', describe: 'per-head size (default embd/heads; qwen3 may differ)' })
      .option('ff', { type: 'number', describe: 'MLP hidden size' })
      .option('ctx', { type: 'number', describe: 'training context length written to the metadata' })
      .option('tied', { type: 'boolean', describe: 'share token embedding and output matrix (default: qwen2 yes, others no)' })
      .option('seed', { type: 'number', default: 42, describe: 'random seed of the weights' })
      .option('vocab', { type: 'string', describe: 'GGUF to copy the tokenizer from (default: llama.cpp models/ggml-vocab-qwen2.gguf)' })
      .option('init', {
        choices: ['random', 'copy'] as const,
        default: 'random' as const,
        describe: 'weights: random, or copy (a hand-set circuit that repeats the token --copy-offset back; needs --kv-heads = --heads)',
      })
      .option('copy-offset', { type: 'number', describe: 'with --init copy: distance of the copied token (default 13)' })
      .option('output-gain', { type: 'number', describe: 'gain of the final norm: higher = sharper next-token distributions (default 1)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
  handler: async (a) => {
    const t0 = Date.now();
    // Sizes the preset leaves to the flags, each refused in its own name.
    for (const [flag, v] of [['--embd', a.embd], ['--layers', a.layers], ['--heads', a.heads], ['--kv-heads', a['kv-heads']], ['--head-dim', a['head-dim']], ['--ff', a.ff], ['--copy-offset', a['copy-offset']]] as const) {
      if (v !== undefined) integerFlag(flag, v);
    }
    if (a['copy-offset'] !== undefined && a.init !== 'copy') throw new RrrError('--copy-offset: only with --init copy (random weights copy nothing)');
    // train and eval need at least 16 tokens of context, as their own --ctx does.
    if (a.ctx !== undefined) integerFlag('--ctx', a.ctx, 16);
    if (a['output-gain'] !== undefined) positiveFlag('--output-gain', a['output-gain']);
    seedFlag(a.seed);
    const done = removeTempOnInterrupt(outFileFlag(a.out));
    const bytes = await makeTinyModel({
      arch: a.arch,
      out: a.out,
      preset: a.preset,
      type: a.type,
      embdType: a['embd-type'],
      nEmbd: a.embd,
      nLayer: a.layers,
      nHead: a.heads,
      nHeadKv: a['kv-heads'],
      headDim: a['head-dim'],
      nFf: a.ff,
      nCtx: a.ctx,
      tied: a.tied,
      seed: a.seed,
      vocab: a.vocab,
      init: a.init,
      copyOffset: a['copy-offset'],
      outputGain: a['output-gain'],
    }).finally(done);
    const mode = { json: a.json };
    say(mode, `wrote ${a.out} (${a.arch}, preset ${a.preset}, ${(bytes / 1e6).toFixed(1)} MB) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    emitJson(mode, { out: a.out, arch: a.arch, preset: a.preset, bytes });
  },
};

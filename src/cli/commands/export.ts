import type { CommandModule } from 'yargs';
import { RrrError } from '../../engine/errors.js';
import { mergeAdapter } from '../../engine/trainer.js';
import { outFileFlag } from '../flag-checks.js';
import { emitJson, say } from '../output.js';

interface Args {
  merge: boolean;
  model: string;
  adapter: string;
  out: string;
  json: boolean;
}

export const exportCommand: CommandModule<object, Args> = {
  command: 'export',
  describe: 'Write base model + LoRA adapter as one standalone GGUF (--merge)',
  builder: (y) =>
    y
      .option('merge', { type: 'boolean', default: false, describe: 'merge the adapter into the base weights (the only export mode)' })
      .option('model', { type: 'string', demandOption: true, describe: 'base GGUF the adapter was trained on' })
      .option('adapter', { type: 'string', demandOption: true, describe: 'LoRA adapter GGUF (from train / Trainer.saveAdapter)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output .gguf path (written atomically)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
      .epilogue(
        'Merged projections are computed in f32 and stored in the base tensor\'s type (f32, f16, bf16, q8_0, q4_K, ...); ' +
          'types that need an importance matrix (IQ*) are stored as f16. Every other tensor and all metadata are copied unchanged.',
      ),
  handler: async (a) => {
    if (!a.merge) throw new RrrError('--merge: export writes base + adapter as one GGUF, its only mode; add --merge');
    const t0 = Date.now();
    const r = await mergeAdapter({ model: a.model, adapter: a.adapter, out: outFileFlag(a.out) });
    const mode = { json: a.json };
    const f16 = r.storedAsF16 ? `, ${r.storedAsF16} stored as f16` : '';
    say(mode, `wrote ${a.out}: ${r.merged} projections merged${f16}, ${(r.bytes / 1e6).toFixed(1)} MB in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    emitJson(mode, { out: a.out, ...r });
  },
};

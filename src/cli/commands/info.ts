import type { CommandModule } from 'yargs';
import { Model } from '../../engine/model.js';
import { buildInfo, devices as listDevices } from '../../engine/devices.js';
import type { DeviceName } from '../../engine/types.js';
import { emitJson, say, table } from '../output.js';

interface Args {
  model?: string;
  device: DeviceName;
  json: boolean;
}

export const infoCommand: CommandModule<object, Args> = {
  command: 'info',
  describe: 'Show the build (CPU/CUDA), the compute devices, and with --model a GGUF model\'s shape and tokenizer',
  builder: (y) =>
    y
      .option('model', { type: 'string', describe: 'GGUF model file to inspect' })
      .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: 'auto' as const, describe: 'device to load the model on' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
  handler: async (a) => {
    const mode = { json: a.json };
    const build = buildInfo();
    const devices = listDevices();
    let model: Record<string, unknown> | undefined;
    if (a.model) {
      const m = await Model.load(a.model, { device: a.device });
      const { eogTokens, ...rest } = m.info;
      model = { ...rest, eogTokens: Array.from(eogTokens) };
      m.dispose();
    }
    emitJson(mode, { build, devices, ...(model && { model }) });
    say(mode, `build: CPU${build.cuda ? ' + CUDA' : ''}`);
    say(mode, table(['device', 'type', 'memory'], devices.map((d) => [`${d.name} (${d.description})`, d.type, `${(d.memoryTotal / 2 ** 30).toFixed(1)} GiB`])));
    if (model) {
      say(mode, '');
      say(mode, table(['model', ''], Object.entries(model).filter(([k]) => k !== 'eogTokens').map(([k, v]) => [k, String(v)])));
    }
  },
};

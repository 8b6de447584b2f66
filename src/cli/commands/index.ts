// The command list, in the order --help shows it.
import type { CommandModule } from 'yargs';
import { exportCommand } from './export.js';
import { benchCommand } from './bench.js';
import { evalCommand } from './eval.js';
import { trainCommand } from './train.js';
import { infoCommand } from './info.js';
import { makeTinyModelCommand } from './make-tiny-model.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<object, any>[] = [trainCommand, evalCommand, benchCommand, exportCommand, makeTinyModelCommand, infoCommand];

/** Task lookup by the name used on the command line (--task). */
import { countdownTask } from './countdown.js';
import { functionCallingTask } from './function-calling.js';
import { syntheticTask } from './synthetic.js';
import type { AnyTask } from './types.js';

export const TASKS: ReadonlyMap<string, AnyTask> = new Map<string, AnyTask>([
  [countdownTask.name, countdownTask as AnyTask],
  [functionCallingTask.name, functionCallingTask as AnyTask],
  [syntheticTask.name, syntheticTask as AnyTask],
]);

export function taskByName(name: string): AnyTask {
  const t = TASKS.get(name);
  if (t === undefined) {
    throw new RangeError(`unknown task "${name}" (known: ${[...TASKS.keys()].join(', ')})`);
  }
  return t;
}

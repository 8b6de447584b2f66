// A run's checkpoint: the trainer's state (adapter and AdamW moments) after a number of steps.
// progress.json is its one commit point. Each save writes a new state-<steps>.gguf, then
// progress.json naming it, then removes the older state: a process killed anywhere in between
// leaves a progress.json and the state it names, of the same step. (With one state.gguf renamed
// in before progress.json, a kill between the two renames paired step N's weights with step M's
// count, and a resume trained steps M..N twice, exit 0: a helper's audit, reproduced with strace.)
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { RrrError } from '../engine/errors.js';
import type { Trainer } from '../engine/trainer.js';
import { writeFileAtomic } from '../util/atomic.js';

/** Runs started before the state was named in progress.json kept it under this name. */
const OLD_STATE = 'state.gguf';
const STATE_NAME = /^state-\d+\.gguf$/;

export interface CheckpointRead {
  stepsDone: number;
  /** The state file progress.json goes with. */
  state: string;
}

export class RunCheckpoint {
  readonly dir: string;
  readonly progress: string;

  constructor(out: string) {
    this.dir = join(out, 'checkpoint');
    this.progress = join(this.dir, 'progress.json');
  }

  /** The checkpoint to resume from, undefined where none was saved; refused in one line where progress.json is damaged. */
  read(steps: number): CheckpointRead | undefined {
    if (!existsSync(this.progress)) return undefined;
    let p: unknown;
    try {
      p = JSON.parse(readFileSync(this.progress, 'utf8'));
    } catch (e) {
      throw new RrrError(`${this.progress}: not a checkpoint's progress (${(e as Error).message}); remove the checkpoint folder to start the steps again`);
    }
    const { stepsDone, state } = (typeof p === 'object' && p !== null ? p : {}) as { stepsDone?: unknown; state?: unknown };
    if (!Number.isSafeInteger(stepsDone) || (stepsDone as number) < 0 || (stepsDone as number) > steps) {
      throw new RrrError(`${this.progress}: stepsDone ${JSON.stringify(stepsDone)} is not a step count of this run (0 to ${steps}); remove the checkpoint folder to start the steps again`);
    }
    if (state !== undefined && (typeof state !== 'string' || !STATE_NAME.test(state))) {
      throw new RrrError(`${this.progress}: state ${JSON.stringify(state)} is not a checkpoint's state file; remove the checkpoint folder to start the steps again`);
    }
    return { stepsDone: stepsDone as number, state: join(this.dir, (state as string | undefined) ?? OLD_STATE) };
  }

  /** Saves the trainer after `stepsDone` steps, and the adapter file a user takes (`adapter`). */
  async save(trainer: Trainer, stepsDone: number, adapter: string): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const name = `state-${stepsDone}.gguf`;
    await trainer.saveState(join(this.dir, name));
    await trainer.saveAdapter(adapter);
    writeFileAtomic(this.progress, JSON.stringify({ stepsDone, state: name }) + '\n');
    for (const f of readdirSync(this.dir)) {
      if (f !== name && (f === OLD_STATE || STATE_NAME.test(f))) rmSync(join(this.dir, f), { force: true });
    }
  }
}

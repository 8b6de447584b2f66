// Task items for train/eval: from a dataset file (--data) or the task's generator (--generate).
import { DataError } from '../tasks/jsonl.js';
import { TASKS, taskByName } from '../tasks/index.js';
import type { TaskItem } from '../tasks/types.js';
import type { AnyTask } from '../tasks/types.js';
import { RrrError } from '../engine/errors.js';
import { integerFlag, maxFlag } from './flag-checks.js';

export const TASK_NAMES = [...TASKS.keys()];

export function taskFor(name: string): AnyTask {
  try {
    return taskByName(name);
  } catch (e) {
    throw new RrrError(`--task: ${(e as Error).message}`);
  }
}

/**
 * --data, --generate and --limit as given to train or eval, refused in one line where they do
 * not go together; a resumed run's stored ones are taken as they were.
 */
export function itemFlags(a: { data?: string; generate?: number; limit?: number }): void {
  if (a.limit !== undefined) integerFlag('--limit', a.limit);
  if (a.generate === undefined) return;
  if (a.data !== undefined) throw new RrrError(`--generate: the items come from --data ${a.data}; give one of the two`);
  // Generated items are held in memory; far more than any run takes is a typo (1e12 was an internal error).
  maxFlag('--generate', integerFlag('--generate', a.generate), 10_000_000);
}

export interface ItemSource {
  data?: string;
  generate?: number;
  seed: number;
  limit?: number;
  skipBadLines: boolean;
}

export interface LoadedItems {
  items: TaskItem[];
  source: string;
  skipped: number;
  /** sha256 of the --data file's bytes the items were read from. */
  digest?: string;
}

export async function loadItems(task: AnyTask, s: ItemSource, log: (line: string) => void): Promise<LoadedItems> {
  let items: TaskItem[];
  let source: string;
  let skipped = 0;
  let digest: string | undefined;
  if (s.data) {
    let r;
    try {
      r = await task.load(s.data, { skipBadLines: s.skipBadLines });
    } catch (e) {
      if (e instanceof DataError) throw new RrrError(e.message);
      throw e;
    }
    items = r.items;
    digest = r.digest;
    skipped = r.skipped.length;
    for (const b of r.skipped.slice(0, 5)) log(`skipped ${b.path}:${b.line}: ${b.message}`);
    if (skipped > 5) log(`… and ${skipped - 5} more bad lines skipped`);
    source = s.data;
  } else {
    if (!task.generate) throw new RrrError(`--data: task '${task.name}' has no generator, give a dataset file`);
    const n = s.generate ?? 64;
    items = task.generate(n, s.seed);
    source = `${n} generated items (seed ${s.seed})`;
  }
  if (s.limit !== undefined) items = items.slice(0, s.limit);
  if (items.length === 0) throw new RrrError(`${s.data ?? '--generate'}: no task items to use`);
  if (s.data) {
    // Said, not dropped: a file may repeat an item on purpose, to weight it.
    const repeats = items.length - new Set(items.map(({ id: _, ...rest }) => JSON.stringify(rest))).size;
    if (repeats) source += ` (${repeats} of them repeat an earlier item; kept)`;
  }
  return { items, source, skipped, ...(digest !== undefined && { digest }) };
}

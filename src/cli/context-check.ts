// --ctx against every item's longest episode, before a run or an evaluation spends time on it.
import type { EnginePolicy } from '../rrr/engine-policy.js';
import { longestEpisode } from '../rrr/episode-length.js';
import type { AnyTask } from '../rrr/types.js';
import type { TaskItem } from '../tasks/types.js';
import { contextFlag } from './flag-checks.js';
import { Progress } from './progress.js';

/**
 * Datasets past this many items show a bar on a terminal: tokenizing 60,000 xLAM-sized prompts
 * took 48.7 s on one thread. Wiped when done, so a refusal stays the one line it prints.
 */
const SHOW_PROGRESS_FROM = 4096;

export async function checkContext(
  policy: EnginePolicy,
  task: AnyTask,
  items: readonly TaskItem[],
  s: { ctx: number; modelCtx: number; maxAnswerTokens: number; maxReflectionTokens: number; silent: boolean },
): Promise<void> {
  const bar = items.length >= SHOW_PROGRESS_FROM ? new Progress('prompt lengths', items.length, { unit: 'task', silent: s.silent, transient: true }) : undefined;
  const longest = await longestEpisode((c) => policy.promptLengths(c), task, items, s, (d) => bar?.update(d));
  bar?.clear();
  contextFlag(s.ctx, s.modelCtx, longest, s);
}

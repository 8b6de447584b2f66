// --ctx against every item's longest episode, before a run or an evaluation spends time on it.
import type { Model } from '../engine/model.js';
import { promptLengths } from '../rrr/engine-policy.js';
import { longestEpisode } from '../rrr/episode-length.js';
import type { AnyTask } from '../tasks/types.js';
import type { TaskItem } from '../tasks/types.js';
import { contextFlag } from './flag-checks.js';
import { Progress } from './progress.js';

/**
 * Datasets past this many items show a bar on a terminal: tokenizing 60,000 xLAM-sized prompts
 * took 48.7 s on one thread. Wiped when done, so a refusal stays the one line it prints.
 */
const SHOW_PROGRESS_FROM = 4096;

/** The longest episode of any item, in tokens, refused in one line where it does not fit --ctx. */
export async function checkContext(
  model: Model,
  task: AnyTask,
  items: readonly TaskItem[],
  s: { ctx: number; modelCtx: number; maxAnswerTokens: number; maxReflectionTokens: number; silent: boolean },
): Promise<number> {
  const bar = items.length >= SHOW_PROGRESS_FROM ? new Progress('prompt lengths', items.length, { unit: 'task', silent: s.silent, transient: true }) : undefined;
  const longest = await longestEpisode((c) => promptLengths(model, c), task, items, s, (d) => bar?.update(d));
  bar?.clear();
  contextFlag(s.ctx, s.modelCtx, longest, s);
  return longest.tokens;
}

/**
 * The generator's context for episodes of up to `longest` tokens: no more than --ctx (`ctx`) or
 * the model's context, and no more than they need, in whole 256-token tiles as the KV cache pads
 * them. Each sequence holds its own cells, so a cache sized by --ctx alone (2048 by default) took
 * several times the memory the longest episode can use; a GPU gives what it saves to the
 * training steps. `longest` is an estimate (a sampled text can take more tokens when tokenized
 * again than it was sampled as, up to several times for some tokens), so the cache may grow up to
 * the limit (`maxCtx`) where an episode is longer.
 */
export function generatorContext(ctx: number, modelCtx: number, longest: number | undefined): { nCtx: number; maxCtx: number } {
  const limit = Math.min(ctx, modelCtx);
  return { nCtx: longest === undefined ? limit : Math.min(limit, Math.ceil(longest / 256) * 256), maxCtx: limit };
}

/** The line train and eval print where --ctx is above the model's context; undefined where not. */
export function ctxAboveModel(ctx: number, modelCtx: number): string | undefined {
  return ctx > modelCtx ? `--ctx ${ctx}: above the model's context, so sequences are held to its ${modelCtx} tokens` : undefined;
}

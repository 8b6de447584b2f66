import type { CommandModule } from 'yargs';
import { resolve } from 'node:path';
import { Generator } from '../../engine/generator.js';
import { RrrError } from '../../engine/errors.js';
import { Model } from '../../engine/model.js';
import { Trainer } from '../../engine/trainer.js';
import type { DeviceName } from '../../engine/types.js';
import { EnginePolicy } from '../../rrr/engine-policy.js';
import { evaluate } from '../../rrr/eval.js';
import type { EvalResult } from '../../rrr/types.js';
import { DEFAULT_CTX, defaultLengths, ensureDefaultModel } from '../default-model.js';
import { emitJson, say, table } from '../output.js';
import { checkContext, ctxAboveModel, generatorContext } from '../context-check.js';
import { integerFlag, MAX_SEQS, maxFlag, seedFlag, threadsFlag } from '../flag-checks.js';
import { onInterrupt } from '../interrupt.js';
import { Progress } from '../progress.js';
import { itemFlags, loadItems, taskFor, TASK_NAMES } from '../task-data.js';

interface Args {
  model?: string;
  adapter?: string;
  task: string;
  data?: string;
  generate?: number;
  limit?: number;
  seed: number;
  'max-reflection-tokens'?: number;
  'max-answer-tokens'?: number;
  'batch-size': number;
  device: DeviceName;
  threads?: number;
  ctx: number;
  'skip-bad-lines': boolean;
  json: boolean;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export const evalCommand: CommandModule<object, Args> = {
  command: 'eval',
  describe: 'First-attempt and second-attempt (after one reflection) accuracy on held-out tasks, base model vs base + adapter',
  builder: (y) =>
    y
      .option('model', { type: 'string', describe: 'GGUF base model (default: the embedded tiny model)' })
      .option('adapter', { type: 'string', describe: 'LoRA adapter GGUF from `train` (omit to evaluate the base model only)' })
      .option('task', { choices: TASK_NAMES, default: 'synthetic', describe: 'task: synthetic, countdown, function-calling (how each scores an answer: README, "How answers are scored")' })
      .option('data', { type: 'string', describe: 'held-out JSONL dataset' })
      .option('generate', { type: 'number', describe: 'without --data: number of items to generate (default 64)' })
      .option('limit', { type: 'number', describe: 'use only the first N items (default: all)' })
      .option('seed', { type: 'number', default: 1001, describe: 'generator seed; keep it different from the training seed so items are held out' })
      .option('max-reflection-tokens', { type: 'number', describe: 'longest reflection (default 128; 2 for the embedded tiny model, as in train)' })
      .option('max-answer-tokens', { type: 'number', describe: 'longest answer (default 256; 10 for the embedded tiny model, as in train)' })
      .option('batch-size', { type: 'number', default: 32, describe: 'tasks generated together' })
      .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: 'auto' as const, describe: 'compute device' })
      .option('threads', { type: 'number', describe: 'CPU threads (default, or 0: all cores)' })
      .option('ctx', { type: 'number', default: DEFAULT_CTX, describe: "longest sequence (prompt + reflection + retry) in tokens, or the model's context if shorter" })
      .option('skip-bad-lines', { type: 'boolean', default: false, describe: 'skip malformed dataset lines (reported) instead of stopping' })
      .option('json', { type: 'boolean', default: false, describe: 'print the results as JSON' }),
  handler: async (a) => {
    const mode = { json: a.json };
    const log = (line: string) => (a.json ? process.stderr.write(line + '\n') : say(mode, line));
    const task = taskFor(a.task);
    // Checked before the model loads, each in the flag's own words.
    const lengths = defaultLengths(a.model);
    const settings = {
      maxAnswerTokens: integerFlag('--max-answer-tokens', a['max-answer-tokens'] ?? lengths.maxAnswerTokens),
      maxReflectionTokens: integerFlag('--max-reflection-tokens', a['max-reflection-tokens'] ?? lengths.maxReflectionTokens),
      batchSize: maxFlag('--batch-size', integerFlag('--batch-size', a['batch-size']), MAX_SEQS),
    };
    integerFlag('--ctx', a.ctx, 16);
    seedFlag(a.seed);
    itemFlags(a);
    const modelPath = a.model ? resolve(a.model) : await ensureDefaultModel(log);
    const data = await loadItems(
      task,
      { data: a.data, generate: a.generate, limit: a.limit, seed: a.seed, skipBadLines: a['skip-bad-lines'] },
      log,
    );
    const model = await Model.load(modelPath, { device: a.device, threads: threadsFlag(a.threads) });
    const above = ctxAboveModel(a.ctx, model.info.nCtxTrain);
    if (above) log(above);
    let generator: Generator;
    try {
      const longest = await checkContext(model, task, data.items, { ...settings, ctx: a.ctx, modelCtx: model.info.nCtxTrain, silent: a.json });
      generator = await Generator.create(model, { maxSeqs: settings.batchSize, ...generatorContext(a.ctx, model.info.nCtxTrain, longest) });
    } catch (e) {
      model.dispose();
      throw e;
    }
    const policy = new EnginePolicy(model, generator);
    let trainer: Trainer | undefined;
    try {
      trainer = a.adapter ? await Trainer.fromAdapter(model, resolve(a.adapter)) : undefined;
      const arms = [{ use: () => generator.setAdapter(null) }, ...(trainer ? [{ use: () => generator.setAdapter(trainer!) }] : [])];
      const total = data.items.length;
      const bar = new Progress(trainer ? 'base and adapter' : 'base', total, { unit: 'task' });
      const interrupt = onInterrupt(() => 'the batch in progress ends and the results of the batches done are shown');
      let results: EvalResult[];
      try {
        let done = 0;
        results = await evaluate(policy, task, data.items, arms, {
          ...settings,
          onProgress: (d) => bar.update((done = d), ''),
          onTokens: (n) => bar.update(done, `${n.toLocaleString('en-US')} tokens into this batch`),
          shouldStop: () => interrupt.requested,
          signal: interrupt.signal,
        });
      } finally {
        interrupt.dispose();
      }
      const [base, tuned] = results as [EvalResult, EvalResult | undefined];
      const done = base.tasks;
      const stopped = done < total;
      if (stopped) {
        bar.halt();
        process.exitCode = 130;
      } else {
        bar.finish();
      }
      emitJson(mode, { task: a.task, items: data.source, ...(a['skip-bad-lines'] && { skippedLines: data.skipped }), model: modelPath, maxReflectionTokens: settings.maxReflectionTokens, maxAnswerTokens: settings.maxAnswerTokens, ...(stopped && { stopped: true, done }), base, ...(tuned && { adapter: tuned }) });
      const row = (name: string, r: EvalResult) => [name, r.tasks, `${r.firstCorrect} (${pct(r.firstAccuracy)})`, `${r.secondCorrect} (${pct(r.secondAccuracy)})`];
      // The blank line parts the table from the progress bar on a terminal; a pipe gets no blank first line.
      say(mode, `${process.stdout.isTTY ? '\n' : ''}${a.task}, ${data.source}; reflections up to ${settings.maxReflectionTokens} tokens, answers up to ${settings.maxAnswerTokens}${stopped ? `: interrupted, the first ${done} of ${total} items` : ''}`);
      say(mode, table(['model', 'tasks', 'first attempt', 'second attempt'], [row('base', base), ...(tuned ? [row('base + adapter', tuned)] : [])]));
    } catch (e) {
      // Past the check's estimate and past --ctx: a sampled text tokenized again grew.
      if (e instanceof RrrError && e.message.startsWith('context overflow')) e.message = `--ctx ${a.ctx}: ${e.message}; raise --ctx`;
      throw e;
    } finally {
      generator.dispose();
      trainer?.dispose();
      model.dispose();
    }
  },
};

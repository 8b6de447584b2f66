import type { CommandModule } from 'yargs';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { freemem } from 'node:os';
import { join, resolve } from 'node:path';
import { Generator } from '../../engine/generator.js';
import { Model } from '../../engine/model.js';
import { gpuMemoryFree } from '../../engine/devices.js';
import { Trainer } from '../../engine/trainer.js';
import { RrrError } from '../../engine/errors.js';
import { EnginePolicy } from '../../rrr/engine-policy.js';
import { firstAttempts, readFailureCache, writeFailureCache } from '../../rrr/failures.js';
import { MetricsLog, summarize } from '../../rrr/metrics.js';
import { runTraining } from '../../rrr/train.js';
import type { FirstAttemptResult, StepMetrics } from '../../rrr/types.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { ensureDefaultModel, isDemoModel } from '../default-model.js';
import { emitJson, say, shellArg } from '../output.js';
import { checkContext, ctxAboveModel, generatorContext } from '../context-check.js';
import { integerFlag, keptLayersFlag, threadsFlag } from '../flag-checks.js';
import { formatRate, Progress } from '../progress.js';
import { onInterrupt } from '../interrupt.js';
import { ALL_NODES, budgetInFlags, inFlags, refuseAllNodesOffGpu } from '../step-flags.js';
import { RunCheckpoint } from '../checkpoint.js';
import { leftByTrain, lockRunFolder } from '../run-lock.js';
import { modelFingerprint } from '../model-fingerprint.js';
import { buildConfig, changedRunFlag, evalCommand, failureKey, readRunConfig, type RunConfig } from '../run-config.js';
import { loadItems, taskFor } from '../task-data.js';
import { setupLine, stepFit, stepLine, summaryTable } from '../train-report.js';
import { SharedFirstAttempts } from '../shared-first-attempts.js';
import { executionSettings, trainFlags, type TrainArgs } from './train-flags.js';

/** How often a long first-attempt pass is saved. */
const FIRST_ATTEMPTS_SAVE_MS = 60_000;

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train a LoRA adapter with Reflect, Retry, Reward (no arguments: a half-minute demo on a tiny built-in model)',
  builder: (y) => trainFlags(y),
  handler: async (a) => {
    const execution = executionSettings(a);
    const mode = { json: a.json };
    const log = (line: string) => (a.json ? process.stderr.write(line + '\n') : say(mode, line));
    let out: string;
    let cfg: RunConfig;
    // Taken first for a run that exists (before loading what a running one already holds), and
    // for a new one where its folder is made.
    let unlock: (() => void) | undefined;
    if (a.resume) {
      if (!a.out) throw new RrrError('--resume needs --out, the run folder to continue');
      out = resolve(a.out);
      const runFile = join(out, 'run.json');
      if (!existsSync(runFile)) throw new RrrError(`${runFile}: not found, nothing to resume`);
      cfg = readRunConfig(runFile);
      const changed = changedRunFlag(a, cfg);
      if (changed) throw new RrrError(`--${changed.flag}: a resumed run keeps the settings in ${runFile}, where it is ${JSON.stringify(changed.was) ?? 'not set'}; start a new run (another --out) to change them`);
      if (a['checkpoint-every'] !== undefined) cfg.checkpointEvery = integerFlag('--checkpoint-every', a['checkpoint-every']);
      if (a.ctx !== undefined) cfg.ctx = integerFlag('--ctx', a.ctx, 16);
      unlock = lockRunFolder(out);
      if (!existsSync(cfg.model) || statSync(cfg.model).size !== cfg.modelBytes || (cfg.modelFingerprint !== undefined && modelFingerprint(cfg.model) !== cfg.modelFingerprint)) {
        throw new RrrError(`${cfg.model}: the run's model is missing or changed since the run started`);
      }
    } else {
      const model = a.model ? resolve(a.model) : await ensureDefaultModel(log);
      cfg = buildConfig(a, model);
      out = resolve(a.out ?? join('runs', `${cfg.task}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`));
      if (existsSync(out) && !statSync(out).isDirectory()) throw new RrrError(`--out ${out}: exists and is not a folder`);
      if (existsSync(join(out, 'run.json'))) throw new RrrError(`--out ${out}: already holds a run (use --resume to continue it, or another folder)`);
      // A run's files would mix with others' (--out . in a project, --out /): a new or empty folder.
      if (existsSync(out) && readdirSync(out).some((f) => !leftByTrain(f))) throw new RrrError(`--out ${out}: holds other files and no run; give a new or empty folder`);
    }
    if (execution.merge === true && (cfg.lora.dropout ?? 0) > 0) {
      throw new RrrError(`--merge-adapter: cannot merge an adapter trained with dropout (--lora-dropout ${cfg.lora.dropout}): its input differs from the weights'`);
    }
    const task = taskFor(cfg.task);
    if (a.resume && cfg.data && !existsSync(cfg.data)) throw new RrrError(`${cfg.data}: the run's --data file (in run.json) is missing`);
    const data = await loadItems(task, { data: cfg.data, generate: cfg.generate, limit: cfg.limit, seed: cfg.seed, skipBadLines: a['skip-bad-lines'] }, log);
    // A resumed run trains on the items it started with, or not at all.
    if (a.resume && cfg.data && cfg.dataSha256 && data.digest !== cfg.dataSha256) {
      throw new RrrError(`${cfg.data}: the run's --data file changed since the run started (its sha256 is not run.json's); restore it, or start a new run (another --out)`);
    }
    if (!a.resume && cfg.data) cfg.dataSha256 = data.digest;

    const model = await Model.load(cfg.model, { device: a.device, threads: threadsFlag(a.threads) });
    if (a['all-nodes']) {
      refuseAllNodesOffGpu('--all-nodes', model.info);
      execution.nodes = { ...execution.nodes, ...ALL_NODES };
    }
    keptLayersFlag('--kept-layers', execution.kept, model.info.nLayer);
    // A step takes no more failures than there are, and there are no more failures than items.
    const maxSeqs = Math.min(cfg.tasksPerStep, data.items.length) * cfg.grpo.groupSize;
    const flash = { flashAttn: execution.flashAttn }; // undefined: the device's default
    let generator: Generator | undefined;
    let trainer: Trainer;
    try {
      // A new run's, or a resumed one's given --ctx; one that goes on as it was started kept its
      // longest episode in run.json (or predates that, and its generator takes all of --ctx).
      if (!a.resume || a.ctx !== undefined) {
        const longest = await checkContext(model, task, data.items, { ...cfg, modelCtx: model.info.nCtxTrain, silent: a.json });
        if (!a.resume) cfg.longestEpisode = longest;
        else if (cfg.longestEpisode !== undefined) cfg.longestEpisode = Math.max(cfg.longestEpisode, longest);
      }
      generator = await Generator.create(model, { maxSeqs, ...generatorContext(cfg.ctx, model.info.nCtxTrain, cfg.longestEpisode), ...flash });
      trainer = await Trainer.create(
        model,
        { ...cfg.lora, seed: cfg.seed },
        { lr: cfg.grpo.learningRate, weightDecay: cfg.grpo.weightDecay, gradClip: cfg.grpo.maxGradNorm },
        { ...flash, ...execution.nodes },
      );
    } catch (e) {
      generator?.dispose();
      model.dispose();
      throw inFlags(e, '--', {}, a['all-nodes'] ? '--all-nodes' : undefined);
    }
    // Written once the data, the model and the trainer's options have passed, so a refused start
    // leaves no run folder.
    unlock ??= lockRunFolder(out);
    if (!a.resume) writeFileAtomic(join(out, 'run.json'), JSON.stringify(cfg, null, 2) + '\n');
    // Said once nothing can refuse the start, so a refusal stays one line on stderr under --json.
    if (!a.resume && isDemoModel(cfg.model)) log(`${a.model ? '--model' : 'no --model given:'} the embedded demo model (a tiny qwen2 that copies${cfg.task === 'synthetic' ? '; the synthetic secret-word task is its demo' : ''})`);
    log(`task ${cfg.task}: ${data.items.length} items from ${data.source}`);
    const above = ctxAboveModel(cfg.ctx, model.info.nCtxTrain);
    if (above) log(above);
    log(setupLine(cfg, model.info, generator.info, trainer.info));
    const policy = new EnginePolicy(model, generator);
    let lastFit = '';
    // Read once, at the first step, after generation has taken its own buffers: 80% of the
    // GPU's free memory, or half the RAM the system says is available (the model's mapped
    // weights count as available there, so less of it).
    let budgetAtStart: number | undefined;
    const defaultBudget = () => {
      budgetAtStart ??= Math.floor(
        model.info.gpu ? 0.8 * gpuMemoryFree() : 0.5 * freemem(),
      );
      return budgetAtStart;
    };
    const checkpoint = new RunCheckpoint(out);
    const metrics = new MetricsLog(join(out, 'metrics.jsonl'));
    const resume = `rrr-native train --resume --out ${shellArg(out)}`;
    let phase: 'first attempts' | 'steps' | 'done' = 'first attempts';
    const interrupt = onInterrupt(() =>
      phase === 'done'
        ? 'the run has done all its steps and is saving them'
        : phase === 'steps'
          ? 'the step in progress ends (dropped and redone on resume, unless it is already training) and a checkpoint is saved'
          : 'the batch of first attempts in progress ends (redone on resume) and the ones done are saved',
    );
    try {
      // Step 1: first attempts (the base model: no adapter is trained yet), cached per run and
      // saved as they go: over a large dataset they can take hours before the first step.
      const failuresPath = join(out, 'failures.json');
      const key = failureKey(cfg, data.digest);
      const itemIds = new Set(data.items.map((i) => i.id));
      let first: FirstAttemptResult | undefined = readFailureCache(failuresPath, key, itemIds);
      const total = data.items.length;
      // --seed makes no items where --data gives them, and first attempts are greedy. run.json's
      // fingerprint was taken at the start, or checked against the file on resume.
      const shared = a['reuse-first-attempts'] ? SharedFirstAttempts.of(cfg.modelFingerprint ?? modelFingerprint(cfg.model), cfg.data ? failureKey({ ...cfg, seed: 0 }, data.digest) : key, generator.info) : undefined;
      const save = (r: FirstAttemptResult) => {
        writeFailureCache(failuresPath, key, r);
        shared?.write(r);
      };
      const earlier = first ? undefined : shared?.read(itemIds, maxSeqs);
      if (earlier) {
        first = earlier;
        writeFailureCache(failuresPath, key, first);
        log(
          `first attempts: ${first.attempted} of ${total} (${first.failures.length} failures) from an earlier run with the same model file, items and --max-answer-tokens (${shared!.path}; --no-reuse-first-attempts redoes them)`,
        );
      }
      if (first && first.attempted >= total) {
        if (!earlier) log(`first attempts: reusing ${failuresPath} (${first.failures.length} failures of ${first.attempted})`);
      } else {
        if (first && !earlier) log(`first attempts: going on after ${first.attempted} of ${total} (saved in ${failuresPath})`);
        const bar = new Progress('first attempts', total, { unit: 'task', from: first?.attempted });
        let saved = Date.now();
        let doneSoFar = first?.attempted ?? 0;
        first = await firstAttempts(
          policy,
          task,
          data.items,
          {
            maxAnswerTokens: cfg.maxAnswerTokens,
            batchSize: maxSeqs,
            onProgress: (d) => bar.update((doneSoFar = d), ''),
            onTokens: (n) => bar.update(doneSoFar, `${n.toLocaleString('en-US')} tokens into this batch`),
            shouldStop: () => interrupt.requested,
            signal: interrupt.signal,
            // A crash or a second Ctrl-C loses at most about a minute of them.
            onBatch: (soFar) => {
              if (Date.now() - saved < FIRST_ATTEMPTS_SAVE_MS) return;
              save(soFar);
              saved = Date.now();
            },
          },
          first,
        );
        save(first);
        if (first.attempted < total) {
          bar.halt(`${first.correct}/${first.attempted} correct so far`);
          log(`interrupted during first attempts (${first.attempted} of ${total} done, saved). Continue with: ${resume}`);
          process.exitCode = 130;
          emitJson(mode, { out, stopped: true, firstAttempts: { attempted: first.attempted, of: total, correct: first.correct } });
          return;
        }
        bar.finish(`${first.correct}/${first.attempted} correct`);
      }
      phase = 'steps';
      if (first.failures.length === 0) throw new RrrError(`every first attempt succeeded: nothing to reflect on (use harder or more data, with another --out: ${out} holds this run's first attempts)`);

      let startStep = 0;
      const saved = a.resume ? checkpoint.read(cfg.steps) : undefined;
      if (saved) {
        startStep = saved.stepsDone;
        await trainer.loadState(saved.state);
        log(startStep === cfg.steps ? `the run had done all its ${cfg.steps} steps` : `resuming after step ${startStep} of ${cfg.steps}`);
      }
      const done: StepMetrics[] = metrics.truncateFrom(startStep);
      generator.setAdapter(trainer);
      const t0 = Date.now();
      const live = Boolean(process.stderr.isTTY) && !a.json;
      let stepStart = t0;
      let stepsThisRun = 0;
      const result = await runTraining(
        policy,
        trainer,
        task,
        new Map(data.items.map((i) => [i.id, i])),
        first.failures,
        cfg,
        {
          // On a terminal, a step that samples for long shows its token count as it goes.
          onTokens: live
            ? (step, n) => {
                const secs = (Date.now() - stepStart) / 1000;
                process.stderr.write(`\r\x1b[2Kstep ${step + 1}/${cfg.steps}: sampling, ${n} tokens (${formatRate(n / Math.max(secs, 1e-3))} tok/s)`);
              }
            : undefined,
          onStep: (m) => {
            if (live) process.stderr.write('\r\x1b[2K');
            stepStart = Date.now();
            metrics.append(m);
            done.push(m);
            // What is left after the last step is its checkpoint and the summary: no step to stop.
            if (m.step + 1 === cfg.steps) phase = 'done';
            stepsThisRun++;
            const left = ((Date.now() - t0) / stepsThisRun) * (cfg.steps - m.step - 1);
            // How the step fitted in memory, the first time and when the split or kept layers change.
            const fit = stepFit(m, model.info.nLayer, execution);
            log(stepLine(m, cfg.steps, left / 1000, fit !== lastFit ? fit : ''));
            if (fit) lastFit = fit;
          },
          checkpoint: (stepsDone) => checkpoint.save(trainer, stepsDone, join(out, 'adapter.gguf')),
          shouldStop: () => interrupt.requested,
          signal: interrupt.signal,
          stepExecution: () => {
            const budget = execution.budget ?? defaultBudget();
            return {
              ...(budget > 0 && { memoryBudget: budget }),
              keptLayers: execution.kept === 'auto' ? (budget > 0 ? 'auto' : 0) : execution.kept,
              mergeAdapter: execution.merge,
              fuseAdapter: execution.fuse,
              keptF16: execution.kept16,
              keptNorms: execution.keptNorms,
              keptSplit: execution.keptSplit,
            };
          },
        },
        startStep,
      );
      const summary = summarize(done, first, first.failures.length);
      writeFileAtomic(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
      if (result.stopped) {
        log(`interrupted after step ${result.stepsDone}; checkpoint saved. Continue with: ${resume}`);
        process.exitCode = 130;
      }
      emitJson(mode, { out, stopped: result.stopped, adapter: join(out, 'adapter.gguf'), evalCommand: evalCommand(cfg, join(out, 'adapter.gguf')), ...summary });
      say(mode, '');
      say(mode, summaryTable(first, summary));
      say(mode, `\nadapter: ${join(out, 'adapter.gguf')} (llama.cpp --lora compatible); metrics: ${metrics.path}`);
      say(mode, `evaluate it: ${evalCommand(cfg, join(out, 'adapter.gguf'))}`);
    } catch (e) {
      // The run folder outlives a refused step or a retry longer than --ctx: say how to go on,
      // with a larger --train-memory-gib or --ctx, which a resumed run may change.
      if (e instanceof RrrError && (e.message.startsWith('step: ') || e.message.includes('out of memory for the '))) {
        budgetInFlags(e, '--max-answer-tokens, --max-reflection-tokens');
        e.message += `; the run continues from its last checkpoint with: ${resume}`;
      }
      if (e instanceof RrrError && e.message.startsWith('context overflow')) e.message = `--ctx ${cfg.ctx}: ${e.message}; the run continues from its last checkpoint with: ${resume} --ctx <more>`;
      throw e;
    } finally {
      unlock();
      interrupt.dispose();
      generator.dispose();
      trainer.dispose();
      model.dispose();
    }
  },
};

// The RRR loop's bookkeeping with a fake policy and learner: which tokens get weights, which
// groups are skipped, and that a resumed run replays the uninterrupted one exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Completion, GenerateOptions, GenerateRequest, StepOptions, TrainSequence } from '../src/engine/types.js';
import { buildTrainBatch } from '../src/rrr/batch.js';
import { reflectAndRetry } from '../src/rrr/episode.js';
import { sharedStartRequests } from '../src/rrr/shared-start.js';
import { runTraining } from '../src/rrr/train.js';
import { stepIndices } from '../src/rrr/schedule-data.js';
import { DEFAULT_GRPO_CONFIG } from '../src/grpo/config.js';
import { GenerationStopped, NonFiniteGradientError, RrrError } from '../src/engine/errors.js';
import { summarize } from '../src/rrr/metrics.js';
import { firstAttempts } from '../src/rrr/failures.js';
import type { FirstAttemptResult, LoopSettings } from '../src/rrr/types.js';
import { evaluate } from '../src/rrr/eval.js';
import type { Group, Policy, StepMetrics } from '../src/rrr/types.js';
import type { Task, TaskItem } from '../src/tasks/types.js';

function completion(tokens: number[], text: string): Completion {
  return { tokens: Int32Array.from(tokens), text, logprobs: new Float32Array(tokens.length).fill(-1), finishReason: 'eos' };
}

/** Tokens are char codes; reflections are seeded pseudo-random words; a retry "succeeds" when its reflection contains "z". */
class FakePolicy implements Policy {
  calls: { requests: GenerateRequest[]; opts: GenerateOptions }[] = [];
  promptTokens(messages: { role: string; content: string }[]): Int32Array {
    const s = messages.map((m) => `<${m.role}>${m.content}`).join('');
    return Int32Array.from([...s].map((c) => c.charCodeAt(0)));
  }
  async generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
    this.calls.push({ requests, opts });
    let state = (opts.seed ?? 0) + 1;
    const next = () => (state = (state * 1103515245 + 12345) % 2147483648);
    return requests.map((r) =>
      Array.from({ length: r.n ?? r.suffixes?.length ?? 1 }, (_, j) => {
        const prompt = String.fromCharCode(...r.prompt, ...(r.suffixes?.[j] ?? []));
        if (prompt.includes('Try again')) {
          const refl = prompt.slice(prompt.lastIndexOf('<assistant>') + 11);
          const ok = refl.includes('z');
          return completion([ok ? 89 : 78], ok ? 'YES' : 'NO');
        }
        if (opts.temperature === 0) return completion([78, 79], 'NO');
        const word = Array.from({ length: 3 }, () => 'abcz'[Math.floor(next() / 65536) % 4]).join('');
        return completion([...word].map((c) => c.charCodeAt(0)), word);
      }),
    );
  }
}

interface Item extends TaskItem {
  q: string;
}
const task: Task<Item> = {
  name: 'fake',
  reflectionPrompt: 'Reflect.',
  retryPrompt: 'Try again.',
  buildPrompt: (i) => [{ role: 'user', content: i.q }],
  verify: (_i, text) => ({ ok: text === 'YES', reason: text }),
  load: async () => ({ items: [], skipped: [] }),
};

test('weights sit exactly on the reflection tokens, scaled by the group advantage', () => {
  const prompt = Int32Array.from([1, 2, 3, 4]);
  const g: Group = {
    itemId: 'a',
    reflectPrompt: prompt,
    reflections: [completion([10, 11], 'x'), completion([12], 'y'), completion([13, 14, 15], 'z'), completion([16], 'w')],
    retries: [],
    rewards: [1, 0, 0, 0],
    reasons: [],
  };
  const b = buildTrainBatch([g], { eps: 0, std: 'sample' });
  assert.equal(b.groupsTrained, 1);
  assert.equal(b.maskSum, 7);
  assert.equal(b.sequences.length, 4);
  const s0 = b.sequences[0]!;
  assert.deepEqual(Array.from(s0.tokens), [1, 2, 3, 4, 10, 11]);
  assert.deepEqual(Array.from(s0.weights), [0, 0, 0, 0, 1.5, 1.5]);
  assert.deepEqual(Array.from(b.sequences[2]!.weights), [0, 0, 0, 0, -0.5, -0.5, -0.5]);
  assert.deepEqual(Array.from(s0.oldLogprobs!), [0, 0, 0, 0, -1, -1]);
  assert.deepEqual(Array.from(s0.mask!), [0, 0, 0, 0, 1, 1]);

  // A reward equal to the group's mean gives advantage 0: its tokens carry no weight but still
  // count in the normaliser, so the mask is given, not left to weights ≠ 0.
  const graded = buildTrainBatch([{ ...g, reflections: g.reflections.slice(0, 3), rewards: [1, 0.5, 0] }], { eps: 0, std: 'sample' });
  assert.deepEqual(Array.from(graded.sequences[1]!.weights), [0, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(graded.sequences[1]!.mask!), [0, 0, 0, 0, 1]);
  assert.equal(graded.sequences.reduce((a, x) => a + x.mask!.reduce((b, m) => b + m, 0), 0), graded.maskSum);
});

test('groups with equal rewards are skipped and counted', () => {
  const mk = (rewards: number[]): Group => ({
    itemId: 'a',
    reflectPrompt: Int32Array.from([1]),
    reflections: rewards.map(() => completion([5], 'r')),
    retries: [],
    rewards,
    reasons: [],
  });
  const b = buildTrainBatch([mk([0, 0, 0]), mk([1, 1, 1]), mk([0, 1, 0])], { eps: 1e-6, std: 'sample' });
  assert.equal(b.groupsSkipped, 2);
  assert.equal(b.groupsTrained, 1);
  assert.equal(b.sequences.length, 3);
});

test('reflect and retry: G reflections share one prompt, one retry each (their common start shared), rewarded by the verifier', async () => {
  const p = new FakePolicy();
  const items: Item[] = [{ id: 'i1', q: 'q1' }, { id: 'i2', q: 'q2' }];
  const groups = await reflectAndRetry(
    p,
    task,
    items.map((item) => ({ item, failure: { itemId: item.id, firstAnswer: 'NO', reason: 'wrong' } })),
    { groupSize: 4, reflectionTemperature: 1, retryTemperature: 0, maxReflectionTokens: 8, maxAnswerTokens: 4, seed: 7 },
  );
  assert.equal(p.calls.length, 2);
  assert.deepEqual(p.calls[0]!.requests.map((r) => r.n), [4, 4]);
  // One retry request per task: its reflection prompt is the shared start, each sample's
  // reflection and the retry instruction its own rest.
  const retries = p.calls[1]!.requests;
  assert.deepEqual(retries.map((r) => r.suffixes?.length), [4, 4]);
  assert.equal(p.calls[1]!.opts.temperature, 0);
  groups.forEach((g, i) => {
    assert.equal(g.reflections.length, 4);
    g.reflections.forEach((r, k) => assert.equal(g.rewards[k], r.text.includes('z') ? 1 : 0));
    const start = String.fromCharCode(...retries[i]!.prompt);
    assert.ok(start.length >= g.reflectPrompt.length, 'the shared start holds the whole reflection prompt');
    retries[i]!.suffixes!.forEach((s, k) => {
      const whole = start + String.fromCharCode(...s);
      assert.ok(whole.startsWith(String.fromCharCode(...g.reflectPrompt)), `retry ${k} repeats the reflection prompt`);
      assert.ok(whole.endsWith(`<assistant>${g.reflections[k]!.text}<user>Try again.`), `retry ${k}: ${whole}`);
    });
  });
  assert.ok(groups.some((g) => g.rewards.some((r) => r === 1)) && groups.some((g) => g.rewards.some((r) => r === 0)), 'both rewards occur');
});

test('prompts with a common start become one request; the start leaves every prompt a token of its own', () => {
  const t = (...x: number[]) => Int32Array.from(x);
  const [r] = sharedStartRequests([t(1, 2, 3, 4), t(1, 2, 3, 9, 9), t(1, 2, 3, 4, 5)]);
  assert.deepEqual([...r!.prompt], [1, 2, 3]);
  assert.deepEqual(r!.suffixes!.map((s) => [...s]), [[4], [9, 9], [4, 5]]);
  // Identical prompts: the last token stays each sample's own.
  const [same] = sharedStartRequests([t(7, 8, 9), t(7, 8, 9)]);
  assert.deepEqual([...same!.prompt], [7, 8]);
  assert.deepEqual(same!.suffixes!.map((s) => [...s]), [[9], [9]]);
  // Nothing in common, a one-token prompt, or a single prompt: one request per prompt.
  assert.deepEqual(sharedStartRequests([t(1, 2), t(3, 4)]).map((q) => [...q.prompt]), [[1, 2], [3, 4]]);
  assert.deepEqual(sharedStartRequests([t(1), t(1, 2)]).map((q) => [...q.prompt]), [[1], [1, 2]]);
  assert.deepEqual(sharedStartRequests([t(5, 6)]).map((q) => [q.prompt.length, q.suffixes]), [[2, undefined]]);
});

test('each epoch visits every failure once', () => {
  const seen: number[] = [];
  for (let step = 0; step < 5; step++) seen.push(...stepIndices(10, 2, 3, step));
  assert.deepEqual([...seen].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const epoch2: number[] = [];
  for (let step = 5; step < 10; step++) epoch2.push(...stepIndices(10, 2, 3, step));
  assert.deepEqual([...epoch2].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.notDeepEqual(epoch2, seen, 'each epoch is shuffled anew');
  assert.deepEqual(stepIndices(10, 2, 3, 7), stepIndices(10, 2, 3, 7), 'a pure function of the step');
});

test('a step never takes a failure twice, where tasks per step do not divide the failures (schedule 2)', () => {
  for (const [n, k] of [[5, 4], [7, 3], [10, 4], [3, 8]] as const) {
    const perEpoch = Math.ceil(n / Math.min(k, n));
    for (let step = 0; step < 60; step++) {
      const picked = stepIndices(n, k, 11, step);
      assert.equal(new Set(picked).size, Math.min(k, n), `n ${n}, k ${k}, step ${step}: ${picked}`);
      if (step % perEpoch === 0) {
        const epoch = Array.from({ length: perEpoch }, (_, j) => stepIndices(n, k, 11, step + j)).flat();
        assert.equal(new Set(epoch).size, n, `n ${n}, k ${k}: the epoch from step ${step} takes every failure`);
      }
    }
  }
  // Runs started before it keep schedule 1, where a step across two shuffles could repeat one.
  const repeats = Array.from({ length: 60 }, (_, step) => stepIndices(5, 4, 11, step, 1)).filter((p) => new Set(p).size < p.length).length;
  assert.ok(repeats > 0, 'schedule 1 is the old one');
});

/** Six items, all failed once, and a loop of `steps` steps over two of them at a time. */
function loopFixture(steps: number): { items: Map<string, Item>; failures: { itemId: string; firstAnswer: string; reason: string }[]; settings: LoopSettings } {
  const items = new Map<string, Item>(Array.from({ length: 6 }, (_, i) => [`i${i}`, { id: `i${i}`, q: `question ${i}` }]));
  const failures = [...items.values()].map((i) => ({ itemId: i.id, firstAnswer: 'NO', reason: 'wrong' }));
  const settings: LoopSettings = {
    steps,
    tasksPerStep: 2,
    seed: 11,
    checkpointEvery: 2,
    maxReflectionTokens: 8,
    maxAnswerTokens: 4,
    grpo: { ...DEFAULT_GRPO_CONFIG, groupSize: 4 },
  };
  return { items, failures, settings };
}

/** What a learner's step returns, for fakes. */
function stepResult(batch: TrainSequence[]) {
  return { loss: 0.5, kl: 0, gradNorm: 1, meanRatio: 1, tokens: batch.length, ms: 1, graphMs: 0, meanLogprob: -1, clipFraction: 0, lossScale: 1, lossTokens: batch.length, skipped: false, graphSplits: 1, graphHostInputs: 10, graphCustomRuns: 0, fallbackOps: [], computeBytes: 0, microBatches: 1, microBatchTokens: 0, keptLayers: 0, adapterMerged: false };
}

test('--passes-per-batch: every pass of a step trains the same sequences, with their sampling log-probs as old', async () => {
  const { items, failures, settings } = loopFixture(6);
  const calls: string[][] = [];
  let pass = 0;
  const learner = {
    step: async (batch: TrainSequence[], o: StepOptions) => {
      if (pass++ % 3 === 0) calls.push([]);
      assert.ok(batch.every((x) => x.oldLogprobs !== undefined && x.oldLogprobs.length === x.tokens.length));
      calls.at(-1)!.push(JSON.stringify({ lr: o.lr, b: batch.map((x) => [Array.from(x.tokens), Array.from(x.weights), Array.from(x.oldLogprobs!)]) }));
      return { ...stepResult(batch), loss: pass };
    },
  };
  const losses: number[] = [];
  await runTraining(new FakePolicy(), learner, task, items, failures, { ...settings, steps: 3, grpo: { ...settings.grpo, passesPerBatch: 3 } }, {
    checkpoint: async () => {},
    shouldStop: () => false,
    onStep: (m) => void (m.groupsTrained && losses.push(m.loss)),
  });
  assert.ok(calls.length > 0, 'no step trained');
  for (const step of calls) {
    assert.equal(step.length, 3);
    assert.equal(step[1], step[0]);
    assert.equal(step[2], step[0]);
  }
  // The step's metrics are its last pass's.
  assert.deepEqual(losses, calls.map((_, i) => 3 * (i + 1)));
});

test('a run interrupted and resumed trains on exactly the same batches', async () => {
  const { items, failures, settings } = loopFixture(6);
  const record = () => {
    const seen: string[] = [];
    const learner = {
      step: async (batch: TrainSequence[], o: StepOptions) => {
        seen.push(JSON.stringify({ lr: o.lr, b: batch.map((s) => [Array.from(s.tokens), Array.from(s.weights)]) }));
        return stepResult(batch);
      },
    };
    return { seen, learner };
  };
  const full = record();
  const checkpoints: number[] = [];
  const r = await runTraining(new FakePolicy(), full.learner, task, items, failures, settings, {
    checkpoint: async (n) => void checkpoints.push(n),
    shouldStop: () => false,
  });
  assert.deepEqual(r, { stepsDone: 6, stopped: false });
  assert.deepEqual(checkpoints, [2, 4, 6]);
  assert.ok(full.seen.length > 0);

  const part1 = record();
  let stepsSeen = 0;
  const stop = await runTraining(new FakePolicy(), part1.learner, task, items, failures, settings, {
    onStep: () => void stepsSeen++,
    checkpoint: async () => {},
    shouldStop: () => stepsSeen === 3,
  });
  assert.deepEqual(stop, { stepsDone: 3, stopped: true });
  const part2 = record();
  await runTraining(new FakePolicy(), part2.learner, task, items, failures, settings, { checkpoint: async () => {}, shouldStop: () => false }, stop.stepsDone);
  assert.deepEqual([...part1.seen, ...part2.seen], full.seen);
});

/** A policy that honours GenerateOptions.signal as the engine does, and aborts on its `call`-th generate call. */
class StoppingPolicy extends FakePolicy {
  constructor(
    private readonly stopper: AbortController,
    private readonly atCall: number,
  ) {
    super();
  }
  override async generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
    if (this.calls.length === this.atCall) this.stopper.abort();
    if (opts.signal?.aborted) throw new GenerationStopped();
    return super.generate(requests, opts);
  }
}

test('a stop during a step drops that step, checkpoints the ones before, and a resume trains as one run', async () => {
  const { items, failures, settings } = loopFixture(6);
  const seenBy = () => {
    const seen: string[] = [];
    return { seen, learner: { step: async (batch: TrainSequence[], o: StepOptions) => (seen.push(JSON.stringify([o.lr, batch.map((x) => Array.from(x.tokens))])), stepResult(batch)) } };
  };
  const full = seenBy();
  await runTraining(new FakePolicy(), full.learner, task, items, failures, settings, { checkpoint: async () => {}, shouldStop: () => false });
  // Each step makes two generate calls (reflections, retries): call 5 is step 2's retries.
  const stopper = new AbortController();
  const part = seenBy();
  const checkpoints: number[] = [];
  const steps: number[] = [];
  const r = await runTraining(new StoppingPolicy(stopper, 5), part.learner, task, items, failures, settings, {
    onStep: (m) => void steps.push(m.step),
    checkpoint: async (n) => void checkpoints.push(n),
    shouldStop: () => false,
    signal: stopper.signal,
  });
  assert.deepEqual(r, { stepsDone: 2, stopped: true });
  assert.deepEqual(steps, [0, 1]);
  assert.deepEqual(checkpoints, [2, 2]);
  const rest = seenBy();
  await runTraining(new FakePolicy(), rest.learner, task, items, failures, settings, { checkpoint: async () => {}, shouldStop: () => false }, r.stepsDone);
  assert.deepEqual([...part.seen, ...rest.seen], full.seen);
});

test('a stop during a batch of first attempts or of eval ends the pass with the batches before it', async () => {
  const items: Item[] = Array.from({ length: 10 }, (_, i) => ({ id: `s${i}`, q: `q${i}` }));
  const stopper = new AbortController();
  const part = await firstAttempts(new StoppingPolicy(stopper, 2), task, items, { maxAnswerTokens: 4, batchSize: 3, signal: stopper.signal });
  assert.equal(part.attempted, 6);
  const whole = await firstAttempts(new FakePolicy(), task, items, { maxAnswerTokens: 4, batchSize: 3 });
  assert.deepEqual(await firstAttempts(new FakePolicy(), task, items, { maxAnswerTokens: 4, batchSize: 3 }, part), whole);
  // eval: every item fails its first attempt, so a batch makes 3 calls per arm, 6 for two arms;
  // call 9 is the second arm's first in the second batch, whose first arm then goes uncounted.
  const halt = new AbortController();
  const arms = [{ use: () => {} }, { use: () => {} }];
  const r = await evaluate(new StoppingPolicy(halt, 9), task, items, arms, { maxAnswerTokens: 4, maxReflectionTokens: 3, batchSize: 3, signal: halt.signal });
  assert.deepEqual(r.map((x) => x.tasks), [3, 3]);
  const first = await evaluate(new FakePolicy(), task, items.slice(0, 3), arms, { maxAnswerTokens: 4, maxReflectionTokens: 3, batchSize: 3 });
  assert.deepEqual(r, first);
});

test('a step whose gradient is not finite drops its update and the run goes on; other errors end it', async () => {
  const { items, failures, settings } = loopFixture(4);
  const learner = (fail: (call: number) => Error | undefined) => {
    let calls = 0;
    return {
      step: async (batch: TrainSequence[]) => {
        const e = fail(calls++);
        if (e) throw e;
        return stepResult(batch);
      },
    };
  };
  const why = 'step: the gradient is not finite (loss nan): the adapter was not updated.';
  const steps: StepMetrics[] = [];
  const checkpoints: number[] = [];
  const r = await runTraining(new FakePolicy(), learner((c) => (c === 1 ? new NonFiniteGradientError(why) : undefined)), task, items, failures, settings, {
    onStep: (m) => void steps.push(m),
    checkpoint: async (n) => void checkpoints.push(n),
    shouldStop: () => false,
  });
  assert.deepEqual(r, { stepsDone: 4, stopped: false });
  assert.deepEqual(checkpoints, [2, 4]);
  const trained = steps.filter((m) => m.trainTokens > 0 || m.updateSkipped);
  assert.ok(trained.length >= 2, `steps with a batch: ${trained.length}`);
  assert.equal(trained[1]!.updateSkipped, why);
  assert.equal(steps.filter((m) => m.updateSkipped).length, 1);
  assert.equal(summarize(steps, { attempted: 6, correct: 0 }, 6).updatesSkipped, 1);
  await assert.rejects(
    runTraining(new FakePolicy(), learner(() => new RrrError('step: something else')), task, items, failures, settings, { checkpoint: async () => {}, shouldStop: () => false }),
    /something else/,
  );
});

test('first attempts stopped between batches and continued end as one pass', async () => {
  const items: Item[] = Array.from({ length: 10 }, (_, i) => ({ id: `i${i}`, q: `q${i}` }));
  const s = { maxAnswerTokens: 4, batchSize: 3 };
  const whole = await firstAttempts(new FakePolicy(), task, items, s);
  assert.equal(whole.attempted, 10);
  assert.deepEqual(whole.failures.map((f) => f.itemId), items.map((i) => i.id));

  const seen: number[] = [];
  let batches = 0;
  const part = await firstAttempts(new FakePolicy(), task, items, { ...s, shouldStop: () => batches++ === 2, onBatch: (r) => seen.push(r.attempted) });
  assert.equal(part.attempted, 6);
  assert.deepEqual(seen, [3, 6]);
  assert.equal(part.failures.length, 6);
  const rest = await firstAttempts(new FakePolicy(), task, items, { ...s, onBatch: (r) => seen.push(r.attempted) }, JSON.parse(JSON.stringify(part)) as FirstAttemptResult);
  assert.deepEqual(seen, [3, 6, 9, 10]);
  assert.deepEqual(rest, whole);
  // Other batches than the saved pass's would not end as it would have.
  await assert.rejects(firstAttempts(new FakePolicy(), task, items, { ...s, batchSize: 4 }, part), /6 attempted is not a whole number of batches of 4/);
});

test("eval's and the first attempts' token counts run through each batch, over all its generate calls", async () => {
  // Reports as the engine does: each call's running count from 0, the last one its total.
  class Counting extends FakePolicy {
    generated = 0;
    override async generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
      const out = await super.generate(requests, opts);
      let n = 0;
      for (const c of out.flat()) {
        n += c.tokens.length;
        opts.onProgress?.(n);
      }
      this.generated += n;
      return out;
    }
  }
  const items: Item[] = Array.from({ length: 7 }, (_, i) => ({ id: `t${i}`, q: `q${i}` }));
  for (const run of ['eval', 'first attempts'] as const) {
    const policy = new Counting();
    const seen: number[][] = [[]];
    const perBatch: number[] = [];
    const onTokens = (n: number) => seen[seen.length - 1]!.push(n);
    const onBatchDone = () => {
      perBatch.push(policy.generated);
      policy.generated = 0;
      seen.push([]);
    };
    if (run === 'eval') {
      const arms = [{ use: () => {} }, { use: () => {} }];
      await evaluate(policy, task, items, arms, { maxAnswerTokens: 4, maxReflectionTokens: 3, batchSize: 3, onTokens, onProgress: onBatchDone });
    } else {
      await firstAttempts(policy, task, items, { maxAnswerTokens: 4, batchSize: 3, onTokens, onProgress: onBatchDone });
    }
    assert.equal(perBatch.length, 3, run);
    perBatch.forEach((total, b) => {
      const counts = seen[b]!;
      assert.ok(counts.every((x, i) => i === 0 || x >= counts[i - 1]!), `${run}, batch ${b}: ${counts.join(',')}`);
      assert.equal(counts.at(-1), total, `${run}, batch ${b}: the last count is the batch's tokens`);
    });
  }
});

test('eval compares every arm over the same items, batch by batch, and stops between batches', async () => {
  const items: Item[] = Array.from({ length: 7 }, (_, i) => ({ id: `e${i}`, q: `q${i}` }));
  const used: string[] = [];
  const arms = ['base', 'tuned'].map((name) => ({ use: () => used.push(name) }));
  const s = { maxAnswerTokens: 4, maxReflectionTokens: 3, batchSize: 3 };
  const all = await evaluate(new FakePolicy(), task, items, arms, s);
  assert.deepEqual(used, ['base', 'tuned', 'base', 'tuned', 'base', 'tuned']);
  assert.deepEqual(all.map((r) => r.tasks), [7, 7]);
  let batches = 0;
  const part = await evaluate(new FakePolicy(), task, items, arms, { ...s, shouldStop: () => batches++ === 1 });
  assert.deepEqual(part.map((r) => r.tasks), [3, 3]);
  for (const r of part) assert.equal(r.firstAccuracy, r.firstCorrect / 3);
});

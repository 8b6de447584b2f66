// End to end through the CLI: the no-argument demo's settings train a LoRA adapter with RRR on
// the synthetic task, and `eval` on held-out items shows second-attempt accuracy well above
// the base model's. Also: Ctrl-C saves a checkpoint and --resume continues bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/util/package-root.js';
import { testDir } from './helpers/models.js';

const main = join(packageRoot, 'dist', 'src', 'cli', 'main.js');
// Each test process gets its own cache folder, so the default model is generated here too.
const env = { ...process.env, XDG_CACHE_HOME: join(testDir(), 'cache'), RRR_DEBUG: '' };

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Runs the CLI and sends one SIGINT when its stderr first matches `cue`. */
async function interruptOnCue(args: string[], cue: RegExp): Promise<{ sent: boolean; code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [main, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let sent = false;
  let [out, err] = ['', ''];
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    if (!sent && cue.test(err)) {
      sent = true;
      child.kill('SIGINT');
    }
  });
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  return { sent, code, out, err };
}

interface EvalJson {
  maxReflectionTokens: number;
  maxAnswerTokens: number;
  base: { tasks: number; firstAccuracy: number; secondAccuracy: number };
  adapter: { tasks: number; firstAccuracy: number; secondAccuracy: number };
}

test('train with no model arguments learns; eval on held-out items shows it', () => {
  const out = join(testDir(), 'learn-run');
  const t = cli('train', '--out', out, '--json');
  assert.equal(t.code, 0, t.err);
  const summary = JSON.parse(t.out) as { steps: number; rewardFirstQuarter: number; rewardLastQuarter: number; stopped: boolean; adapter: string; evalCommand: string };
  assert.equal(summary.steps, 60);
  assert.match(t.err, /^first attempts 100% 64\/64 .*\n(.*\n)*step 60\/60 /m);
  assert.equal(summary.adapter, join(out, 'adapter.gguf'));
  assert.equal(summary.evalCommand, `rrr-native eval --adapter ${summary.adapter} --task synthetic --seed 1001`);
  assert.equal(summary.stopped, false);
  assert.ok(summary.rewardLastQuarter > summary.rewardFirstQuarter + 0.3, `reward ${summary.rewardFirstQuarter} -> ${summary.rewardLastQuarter}`);
  for (const f of ['adapter.gguf', 'metrics.jsonl', 'summary.json', 'run.json', 'failures.json', 'checkpoint/state-60.gguf']) {
    assert.ok(existsSync(join(out, f)), `${f} missing`);
  }
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
  assert.equal(metrics.length, 60);

  const e = cli('eval', '--adapter', join(out, 'adapter.gguf'), '--json');
  assert.equal(e.code, 0, e.err);
  const r = JSON.parse(e.out) as EvalJson;
  assert.equal(r.base.tasks, 64);
  // --json keeps stdout for the result; progress goes to stderr.
  assert.match(e.err, /^base and adapter 100% 64\/64 /m);
  assert.ok(r.adapter.secondAccuracy >= r.base.secondAccuracy + 0.4, `second attempt: base ${r.base.secondAccuracy}, adapter ${r.adapter.secondAccuracy}`);
  assert.ok(r.adapter.secondAccuracy >= r.adapter.firstAccuracy);
});

test("the embedded model named by its path gets the demo's settings; train's eval line runs as printed", () => {
  const out = join(testDir(), 'demo-hint-run');
  const t = cli('train', '--out', out, '--steps', '1', '--tasks-per-step', '2');
  assert.equal(t.code, 0, t.err);
  const line = t.out.split('\n').find((l) => l.startsWith('evaluate it: rrr-native eval '));
  assert.ok(line, t.out);
  const embedded = join(env.XDG_CACHE_HOME, 'rrr-native', 'default-qwen2-tiny-copy-v2.gguf');
  const common = ['--adapter', join(out, 'adapter.gguf'), '--task', 'synthetic', '--seed', '1001', '--generate', '8', '--json'];
  const results = [line.replace('evaluate it: rrr-native ', '').split(' ').concat('--generate', '8', '--json'), ['eval', ...common], ['eval', '--model', embedded, ...common]].map((args) => {
    const r = cli(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    return JSON.parse(r.out) as EvalJson;
  });
  assert.deepEqual([results[1]!.maxReflectionTokens, results[1]!.maxAnswerTokens], [2, 10]);
  assert.deepEqual(results[2], results[1], 'eval --model <the embedded file> against eval without --model');
  assert.deepEqual(results[0], results[1], "train's printed eval line against eval without --model");
  assert.doesNotMatch(line, /--model/);
  const named = join(testDir(), 'demo-by-path-run');
  const byModel = cli('train', '--model', embedded, '--out', named, '--steps', '1', '--tasks-per-step', '2', '--ctx', '100000');
  assert.equal(byModel.code, 0, byModel.err);
  assert.match(byModel.out, /^--ctx 100000: above the model's context, so sequences are held to its 2048 tokens$/m);
  assert.match(byModel.out, /^evaluate it: rrr-native eval --adapter \S+ --task synthetic --seed 1001 --ctx 100000$/m);
  const cfg = JSON.parse(readFileSync(join(named, 'run.json'), 'utf8')) as { maxAnswerTokens: number; maxReflectionTokens: number; tasksPerStep: number };
  assert.deepEqual([cfg.maxAnswerTokens, cfg.maxReflectionTokens, cfg.tasksPerStep], [10, 2, 2]);
});

test('Ctrl-C saves a checkpoint; --resume finishes exactly like an uninterrupted run', async () => {
  const steps = ['--steps', '8', '--checkpoint-every', '100', '--tasks-per-step', '4'];
  const full = join(testDir(), 'full-run');
  assert.equal(cli('train', '--out', full, ...steps).code, 0);

  const cut = join(testDir(), 'cut-run');
  const child = spawn(process.execPath, [main, 'train', '--out', cut, ...steps], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let sent = false;
  child.stdout.on('data', (d: Buffer) => {
    // Interrupt as soon as the second step has finished.
    if (!sent && /step 2\/8/.test(d.toString())) {
      sent = true;
      child.kill('SIGINT');
      // A terminal's Ctrl-C under npm or timeout arrives twice (the parent forwards its own copy):
      // still one request to stop after the step and save.
      setTimeout(() => child.kill('SIGINT'), 50);
    }
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (c, s) => r([c, s])));
  assert.ok(sent, 'the run ended before it could be interrupted');
  // Stopping cuts the step's generation short, so the run can be exiting when the copy lands,
  // after Node has let go of its signal handlers: killed by it then, with all saved (below).
  assert.ok(code === 130 || signal === 'SIGINT', `exit code ${code}, signal ${signal}`);
  const progress = JSON.parse(readFileSync(join(cut, 'checkpoint', 'progress.json'), 'utf8')) as { stepsDone: number };
  assert.ok(progress.stepsDone >= 2 && progress.stepsDone < 8, `stopped after ${progress.stepsDone} steps`);

  // A save killed after its state and before its progress.json leaves a later state beside it
  // (here the full run's last), and a temporary file of a process that is gone: the resumed run
  // takes the state progress.json names and removes the others.
  copyFileSync(join(full, 'checkpoint', 'state-8.gguf'), join(cut, 'checkpoint', 'state-8.gguf'));
  const stale = join(cut, 'checkpoint', `state-9.gguf.tmp-${2 ** 22 - 3}`);
  writeFileSync(stale, 'x');
  // How often a run saves is not what it trains: a resumed run may change it, to the same result.
  const resumed = cli('train', '--resume', '--out', cut, '--checkpoint-every', '3');
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, new RegExp(`resuming after step ${progress.stepsDone} of 8`));
  const strip = (p: string) =>
    readFileSync(p, 'utf8')
      .trim()
      .split('\n')
      .map((l) => {
        const m = JSON.parse(l) as Record<string, number>;
        // Measures of the process, not of what it trained: its rates, and its compute buffer, which
        // grows to the largest step it has run.
        for (const k of ['seconds', 'generateTokensPerSec', 'trainTokensPerSec', 'trainComputeBytes']) delete m[k];
        return JSON.stringify(m);
      });
  assert.deepEqual(strip(join(cut, 'metrics.jsonl')), strip(join(full, 'metrics.jsonl')));
  assert.deepEqual(readFileSync(join(cut, 'adapter.gguf')), readFileSync(join(full, 'adapter.gguf')));
  assert.deepEqual(readdirSync(join(cut, 'checkpoint')).sort(), ['progress.json', 'state-8.gguf']);
});

test('Ctrl-C during first attempts saves them; --resume goes on to the same failures', async () => {
  const args = ['--generate', '640', '--steps', '1'];
  const full = join(testDir(), 'first-full');
  assert.equal(cli('train', '--out', full, ...args).code, 0);

  const cut = join(testDir(), 'first-cut');
  // Off a terminal the bar prints every tenth: here after the first of ten batches.
  // Its own first attempts, not the full run's from the shared cache.
  const { sent, code, out, err } = await interruptOnCue(['train', '--out', cut, ...args, '--no-reuse-first-attempts'], /first attempts +\d+%/);
  assert.ok(sent, 'the first attempts ended before they could be interrupted');
  assert.equal(code, 130, err);
  assert.match(err, /stopping: the batch of first attempts in progress ends \(redone on resume\) and the ones done are saved/);
  const m = /interrupted during first attempts \((\d+) of 640 done, saved\)/.exec(out);
  assert.ok(m && +m[1]! > 0 && +m[1]! < 640, out);
  assert.ok(!existsSync(join(cut, 'checkpoint')), 'no step ran');

  const resumed = cli('train', '--resume', '--out', cut);
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, new RegExp(`first attempts: going on after ${m[1]} of 640`));
  assert.deepEqual(readFileSync(join(cut, 'failures.json')), readFileSync(join(full, 'failures.json')));
  assert.deepEqual(readFileSync(join(cut, 'adapter.gguf')), readFileSync(join(full, 'adapter.gguf')));
});

test('a new run takes its first attempts from an earlier one with the same model, items and answer length', () => {
  const args = ['--generate', '96', '--seed', '4242', '--steps', '1'];
  const run = (name: string, ...more: string[]) => {
    const out = join(testDir(), name);
    const r = cli('train', '--out', out, ...args, ...more);
    assert.equal(r.code, 0, r.err);
    return { out: r.out, failures: readFileSync(join(out, 'failures.json')) };
  };
  const reused = /first attempts: 96 of 96 \(\d+ failures\) from an earlier run with the same model file, items and --max-answer-tokens \(.*rrr-native\/first-attempts\/[0-9a-f]+\.json; --no-reuse-first-attempts redoes them\)/;
  const a = run('shared-a');
  assert.doesNotMatch(a.out, reused);
  const b = run('shared-b', '--lr', '1e-3');
  assert.match(b.out, reused);
  assert.deepEqual(b.failures, a.failures);
  // Another answer length or item set is other first attempts; the flag redoes them, the same.
  assert.doesNotMatch(run('shared-c', '--max-answer-tokens', '9').out, reused);
  assert.doesNotMatch(run('shared-d', '--limit', '95').out, reused);
  const d = run('shared-e', '--no-reuse-first-attempts');
  assert.doesNotMatch(d.out, reused);
  assert.deepEqual(d.failures, a.failures);
});

test('first attempts are not taken from a model file replaced in place, another engine setting, or a damaged entry; old entries go', () => {
  const dir = join(testDir(), 'shared-models');
  mkdirSync(dir, { recursive: true });
  const [a, b, m] = ['a', 'b', 'm'].map((n) => join(dir, `${n}.gguf`));
  for (const [path, seed] of [[a, '1'], [b, '2']] as const) assert.equal(cli('make-tiny-model', '--out', path!, '--seed', seed).code, 0);
  assert.equal(statSync(a!).size, statSync(b!).size);
  // As `cp -p` leaves it: the same path, size and modification time, other weights.
  const place = (from: string) => {
    copyFileSync(from, m!);
    utimesSync(m!, new Date(2024, 0, 1), new Date(2024, 0, 1));
  };
  const args = ['--model', m!, '--task', 'countdown', '--generate', '24', '--steps', '1', '--max-answer-tokens', '12', '--max-reflection-tokens', '8'];
  const run = (name: string, ...more: string[]) => {
    const r = cli('train', '--out', join(dir, name), ...args, ...more);
    assert.equal(r.code, 0, r.err);
    return r.out;
  };
  const reused = /from an earlier run with the same model file/;
  place(a!);
  assert.doesNotMatch(run('r1'), reused);
  assert.match(run('r2'), reused);
  place(b!);
  assert.doesNotMatch(run('r3'), reused, "b's first attempts are not a's");
  assert.notDeepEqual(readFileSync(join(dir, 'r3', 'failures.json')), readFileSync(join(dir, 'r1', 'failures.json')));
  // A resumed run refuses the replaced file too.
  const resumed = cli('train', '--resume', '--out', join(dir, 'r1'));
  assert.equal(resumed.code, 1);
  assert.match(resumed.err, /^rrr-native: \S+m\.gguf: the run's model is missing or changed since the run started\n$/);
  // Flash attention rounds otherwise, and a greedy token can tip: its own entry.
  assert.doesNotMatch(run('r4', '--flash-attn', 'on'), reused);
  assert.match(run('r5', '--flash-attn', 'on'), reused);

  // An entry whose key still matches but whose failures name items the run does not have is
  // redone (the steps would fail on it), and rewritten.
  const entries = join(env.XDG_CACHE_HOME, 'rrr-native', 'first-attempts');
  const newest = readdirSync(entries).map((f) => join(entries, f)).sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs)[0]!;
  const entry = JSON.parse(readFileSync(newest, 'utf8')) as { result: { failures: { itemId: string }[] } };
  entry.result.failures[0]!.itemId = 'no-such-item';
  writeFileSync(newest, JSON.stringify(entry));
  assert.doesNotMatch(run('r6', '--flash-attn', 'on'), reused);
  assert.match(run('r7', '--flash-attn', 'on'), reused);

  // Entries unused for 90 days are removed when one is written.
  const stale = join(entries, 'stale.json');
  writeFileSync(stale, '{}');
  utimesSync(stale, new Date(Date.now() - 91 * 86400e3), new Date(Date.now() - 91 * 86400e3));
  run('r8', '--limit', '23');
  assert.ok(!existsSync(stale), 'the stale entry is gone');
});

test("the generator's KV cache holds the longest episode, not all of --ctx, and run.json keeps that length", () => {
  const out = join(testDir(), 'kv-run');
  const t = cli('train', '--out', out, '--steps', '1', '--tasks-per-step', '2');
  assert.equal(t.code, 0, t.err);
  const cfg = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as { ctx: number; longestEpisode: number };
  assert.equal(cfg.ctx, 2048);
  assert.ok(cfg.longestEpisode > 16 && cfg.longestEpisode <= 256, `longest episode ${cfg.longestEpisode} tokens`);
  const embedded = join(env.XDG_CACHE_HOME, 'rrr-native', 'default-qwen2-tiny-copy-v2.gguf');
  const info = (JSON.parse(cli('info', '--model', embedded, '--json').out) as { model: { nLayer: number; nHeadKv: number; headDim: number } }).model;
  const cellBytes = 2 * info.nLayer * info.nHeadKv * info.headDim * 2; // K and V, f16
  // 2 tasks x 8 reflections, each in one 256-cell tile (was 2048 cells each: 8 times this).
  assert.match(t.out, new RegExp(`KV cache ${((16 * 256 * cellBytes) / 2 ** 20).toFixed(0)} MiB`));
});

test('a reader that closes early (| head) stops the run as Ctrl-C does: saved, no stack, --resume finishes', async () => {
  const out = join(testDir(), 'closed-output-run');
  const child = spawn(process.execPath, [main, 'train', '--out', out, '--steps', '4', '--tasks-per-step', '2'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  // The first line read, the pipe is closed: its next write fails with EPIPE.
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((r) => child.on('close', r));
  assert.equal(code, 130, err);
  assert.match(err, /stopping: .* \(its output was closed\)/);
  // How to go on reaches the user on stderr, where stdout went nowhere.
  assert.match(err, /^interrupted (after step \d+; checkpoint saved|during first attempts \(.*\))\. Continue with: rrr-native train --resume --out \S+closed-output-run$/m);
  assert.doesNotMatch(err, /EPIPE|\n\s+at /);
  const resumed = cli('train', '--resume', '--out', out, '--json');
  assert.equal(resumed.code, 0, resumed.err);
  assert.equal((JSON.parse(resumed.out) as { steps: number }).steps, 4);
});

test('Ctrl-C during eval stops after the batch and reports the items done', async () => {
  // Not --json, whose progress is silent: the bar's first line off a terminal is the cue.
  const { sent, code, out, err } = await interruptOnCue(['eval', '--generate', '640', '--batch-size', '64'], /base +\d+%/);
  assert.ok(sent, 'the evaluation ended before it could be interrupted');
  assert.equal(code, 130, err);
  const m = /interrupted, the first (\d+) of 640 items\n.*\n.*\nbase +(\d+) /.exec(out);
  assert.ok(m, out);
  const done = Number(m[1]);
  assert.ok(done > 0 && done < 640 && done % 64 === 0, `done ${done}`);
  assert.equal(Number(m[2]), done, 'the table counts the items done');
});

test('one train a run folder: a second is refused while the first runs; a dead one\'s lock is taken over', async () => {
  const busy = join(testDir(), 'busy-run');
  const child = spawn(process.execPath, [main, 'train', '--out', busy, '--steps', '100', '--tasks-per-step', '4'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const closed = new Promise<number | null>((r) => child.on('close', r));
  let seen = '';
  await Promise.race([
    new Promise<void>((r) => child.stdout.on('data', (d: Buffer) => /step 1\/100/.test((seen += d.toString())) && r())),
    closed.then((c) => assert.fail(`the first run ended (${c}) before its first step`)),
  ]);
  const second = cli('train', '--resume', '--out', busy);
  child.kill('SIGINT');
  assert.equal(await closed, 130);
  assert.equal(second.code, 1);
  assert.match(second.err, new RegExp(`^rrr-native: --out .*busy-run: in use by another train \\(process ${child.pid}, .*train\\.lock; if no train runs there, remove it\\)\\n$`));
  assert.ok(!existsSync(join(busy, 'train.lock')), 'released when the run stops');
  // A lock whose process is gone (killed, or the machine went down) is taken over.
  const done = join(testDir(), 'done-run');
  assert.equal(cli('train', '--out', done, '--steps', '1').code, 0);
  const gone = spawnSync(process.execPath, ['-e', '']).pid!;
  writeFileSync(join(done, 'train.lock'), `${gone}\n`);
  const again = cli('train', '--resume', '--out', done);
  assert.equal(again.code, 0, again.err);
  assert.ok(!existsSync(join(done, 'train.lock')));
});

test('a resumed run refuses a --data file that changed or went missing', () => {
  const data = join(testDir(), 'resume-data.jsonl');
  const item = (w: string) => `{"options": ["apple", "${w}", "stone", "cloud"], "secret": "apple"}\n`;
  writeFileSync(data, ['river', 'lake', 'sea', 'hill'].map(item).join(''));
  const out = join(testDir(), 'resume-data-run');
  const first = cli('train', '--task', 'synthetic', '--data', data, '--out', out, '--steps', '2', '--tasks-per-step', '2', '--checkpoint-every', '1');
  assert.equal(first.code, 0, first.err);
  const runJson = readFileSync(join(out, 'run.json'), 'utf8');
  assert.match(runJson, /"dataSha256": "[0-9a-f]{64}"/);
  // the same bytes: it goes on (here: the run is done, so it reports the finished run again)
  assert.equal(cli('train', '--resume', '--out', out).code, 0);
  writeFileSync(data, ['river', 'lake', 'sea', 'hill', 'dune'].map(item).join(''));
  const changed = cli('train', '--resume', '--out', out);
  assert.equal(changed.code, 1);
  assert.match(changed.err.trim(), /^rrr-native: .*resume-data\.jsonl: the run's --data file changed since the run started \(its sha256 is not run\.json's\); restore it, or start a new run \(another --out\)$/);
  rmSync(data);
  const missing = cli('train', '--resume', '--out', out);
  assert.equal(missing.code, 1);
  assert.match(missing.err.trim(), /^rrr-native: .*resume-data\.jsonl: the run's --data file \(in run\.json\) is missing$/);
  assert.equal(readFileSync(join(out, 'run.json'), 'utf8'), runJson);
});

test('bad dataset lines are reported with their line number, or skipped on request', () => {
  const data = join(testDir(), 'bad.jsonl');
  writeFileSync(data, '{"options": ["apple", "river"], "secret": "river"}\n{"options": "apple"}\n{"options": ["a", "b"], "secret": "b"}\nnot json\n');
  const r = cli('train', '--task', 'synthetic', '--data', data, '--out', join(testDir(), 'bad-run'), '--steps', '1');
  assert.equal(r.code, 1);
  assert.match(r.err.trim(), /^rrr-native: .*bad\.jsonl:2: expected "options" to be an array of at least 2 single words$/);
  const s = cli('eval', '--task', 'synthetic', '--data', data, '--skip-bad-lines', '--json');
  assert.equal(s.code, 0, s.err);
  assert.match(s.err, /skipped .*bad\.jsonl:2/);
  assert.match(s.err, /skipped .*bad\.jsonl:4/);
  assert.equal((JSON.parse(s.out) as EvalJson).base.tasks, 2);
  assert.equal((JSON.parse(s.out) as { skippedLines: number }).skippedLines, 2);
});

test('unknown task and a run folder in use are refused', () => {
  const u = cli('train', '--task', 'chess');
  assert.equal(u.code, 2);
  assert.match(u.err, /Invalid values/);
  const out = join(testDir(), 'learn-run');
  const again = cli('train', '--out', out);
  assert.equal(again.code, 1);
  assert.match(again.err, /already holds a run \(use --resume to continue it, or another folder\)/);
  const missing = join(testDir(), 'refused-run');
  const m = cli('train', '--model', join(testDir(), 'no-such-model.gguf'), '--task', 'countdown', '--out', missing);
  assert.equal(m.code, 1);
  assert.match(m.err.trim(), /^rrr-native: .*no-such-model\.gguf: no such file$/);
  const d = cli('train', '--task', 'countdown', '--data', join(testDir(), 'no-such-data.jsonl'), '--out', missing);
  assert.equal(d.code, 1);
  assert.match(d.err.trim(), /no-such-data\.jsonl: file not found$/);
  assert.ok(!existsSync(missing), 'a refused start leaves no run folder');
  const none = cli('train', '--resume', '--out', join(testDir(), 'nothing-here'));
  assert.equal(none.code, 1);
  assert.match(none.err, /run\.json: not found, nothing to resume/);
});

test('--train-memory-gib splits steps into micro-batches and keeps the layers that fit; --merge-adapter; --lora-dropout; bad values are refused', () => {
  type Row = { microBatches: number; keptLayers: number; trainComputeBytes: number; loss: number; gradNorm: number; rewardMean: number };
  const firstStep = (out: string, ...flags: string[]): Row => {
    const r = cli('train', '--out', out, '--steps', '1', ...flags);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim()) as Row;
  };
  // Room for the whole step, nothing kept: what the step takes in one micro-batch.
  const whole = firstStep(join(testDir(), 'memory-run-whole'), '--train-memory-gib', '2', '--kept-layers', '0');
  assert.deepEqual([whole.microBatches, whole.keptLayers], [1, 0]);
  // The adapter merged into the weights in the step's graph. A fresh adapter has B = 0, so
  // W + s·B·A is W: the same numbers, from a graph whose merge temporaries the buffer shows.
  const merged = firstStep(join(testDir(), 'memory-run-merged'), '--train-memory-gib', '2', '--kept-layers', '0', '--merge-adapter');
  assert.deepEqual([merged.rewardMean, merged.loss, merged.gradNorm], [whole.rewardMean, whole.loss, whole.gradNorm]);
  assert.notEqual(merged.trainComputeBytes, whole.trainComputeBytes, 'the merged graph ran');
  // Fused into the weights' products, [W | B]·[x ; s·A·x] with B = 0 is W·x: the same forward pass.
  const fused = firstStep(join(testDir(), 'memory-run-fused'), '--train-memory-gib', '2', '--kept-layers', '0', '--fuse-adapter', 'on');
  assert.deepEqual([fused.rewardMean, fused.loss], [whole.rewardMean, whole.loss]);
  assert.notEqual(fused.trainComputeBytes, whole.trainComputeBytes, 'the fused graph ran');
  // LoRA dropout: with B = 0 the forward pass is the same, s·A·x and so dB are not.
  const dropped = firstStep(join(testDir(), 'memory-run-dropout'), '--train-memory-gib', '2', '--kept-layers', '0', '--lora-dropout', '0.3');
  assert.deepEqual([dropped.rewardMean, dropped.loss], [whole.rewardMean, whole.loss]);
  assert.notEqual(dropped.gradNorm, whole.gradNorm, 'dropout reached the step');
  // Flash attention (off by default on the CPU) in generation and in the step's graphs.
  const flashOut = join(testDir(), 'memory-run-flash');
  const fl = cli('train', '--out', flashOut, '--steps', '1', '--train-memory-gib', '2', '--kept-layers', '0', '--flash-attn', 'on');
  assert.equal(fl.code, 0, fl.err);
  assert.match(fl.out, /; flash attention on in generation, on in training\n/);
  const flashRow = JSON.parse(readFileSync(join(flashOut, 'metrics.jsonl'), 'utf8').trim()) as Row;
  assert.ok(Number.isFinite(flashRow.loss) && flashRow.trainComputeBytes !== whole.trainComputeBytes, JSON.stringify(flashRow));
  // A little less than that: the same first step (same seed) splits, and stays within it.
  const budget = whole.trainComputeBytes - 4096;
  const tight = join(testDir(), 'memory-run');
  const t = cli('train', '--out', tight, '--steps', '1', '--train-memory-gib', String(budget / 2 ** 30));
  assert.equal(t.code, 0, t.err);
  const row = JSON.parse(readFileSync(join(tight, 'metrics.jsonl'), 'utf8').trim()) as Row;
  assert.ok(row.microBatches > 1, `${row.microBatches} micro-batches in ${budget} bytes`);
  assert.ok(row.trainComputeBytes <= budget, `compute buffer ${row.trainComputeBytes} within ${budget}`);
  assert.match(t.out, /training step: \d+ micro-batches, 0\/2 layers kept/);
  // Room to spare: every layer keeps its activations.
  const roomy = firstStep(join(testDir(), 'memory-run-roomy'), '--train-memory-gib', '2');
  assert.deepEqual([roomy.microBatches, roomy.keptLayers], [1, 2]);
  const small = cli('train', '--out', join(testDir(), 'memory-run-small'), '--steps', '1', '--train-memory-gib', '0.001');
  assert.equal(small.code, 1);
  assert.match(small.err.trim().split("\n").pop()!, /^rrr-native: step: the training pass over one sequence of \d+ tokens plans [\d.]+ MiB of compute buffer, over the memory budget of 1\.0 MiB \(--train-memory-gib\): give it more memory or use shorter sequences \(--max-answer-tokens, --max-reflection-tokens\); the run continues from its last checkpoint with: rrr-native train --resume --out .*memory-run-small$/);
  for (const [flag, v, msg] of [
    ['--kept-layers', 'many', /--kept-layers: expected a whole number or auto, got 'many'/],
    ['--train-memory-gib', '0', /--train-memory-gib: expected a number > 0, got 0/],
    ['--lora-dropout', '1', /--lora-dropout: expected a number in \[0, 1\), got 1/],
    // The trainer's own refusals, said in flags, before run.json is written.
    ['--node-waits', 'device', /^rrr-native: --node-waits: it sets how a GPU's runs .*it needs a GPU \(this model is on cpu\) and one of our nodes \(--fused-attn-backward and the like\)$/im],
    ['--fused-attn-f16', 'true', /^rrr-native: --fused-attn-f16: it sets how the fused attention backward multiplies; give --fused-attn-backward too$/m],
    ['--all-nodes', 'true', /--all-nodes: every node of ours and their waits on the device are for a GPU; this model is on cpu/i],
  ] as const) {
    const b = cli('train', flag, v, '--out', join(testDir(), 'memory-run-bad'));
    assert.equal(b.code, 1);
    assert.match(b.err, msg);
  }
  const both = cli('train', '--merge-adapter', '--lora-dropout', '0.1', '--out', join(testDir(), 'memory-run-bad'));
  assert.equal(both.code, 1);
  assert.match(both.err, /--merge-adapter: cannot merge an adapter trained with dropout \(--lora-dropout 0\.1\)/);
  assert.ok(!existsSync(join(testDir(), 'memory-run-bad')), 'a refused start leaves no run folder');
});

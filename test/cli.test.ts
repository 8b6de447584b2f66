// The command line as a user meets it: help text, JSON output, exit codes, one-line errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/util/package-root.js';
import { testDir, tinyModel } from './helpers/models.js';
import { RrrError } from '../src/engine/errors.js';
import { contextFlag } from '../src/cli/flag-checks.js';
import { shellArg } from '../src/cli/output.js';
import { inFlags } from '../src/cli/step-flags.js';
import { loadItems, taskFor } from '../src/cli/task-data.js';

const main = join(packageRoot, 'dist', 'src', 'cli', 'main.js');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, RRR_DEBUG: '' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function assertOneLineError(r: { code: number | null; err: string }, code: number, pattern: RegExp) {
  assert.equal(r.code, code, r.err);
  const lines = r.err.trimEnd().split('\n');
  assert.equal(lines.length, 1, `stderr should be one line:\n${r.err}`);
  assert.match(lines[0]!, /^rrr-native: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.err, /\n\s+at /);
}

test('--help lists the commands and every flag is described', () => {
  const r = cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /make-tiny-model/);
  assert.match(r.out, /info/);
  const sub = cli('make-tiny-model', '--help');
  assert.equal(sub.code, 0);
  for (const flag of ['--arch', '--out', '--preset', '--type', '--embd', '--layers', '--heads', '--kv-heads', '--head-dim', '--ff', '--ctx', '--tied', '--seed', '--vocab', '--json']) {
    const line = sub.out.split('\n').find((l) => l.trimStart().startsWith(flag));
    assert.ok(line, `${flag} missing from help`);
    assert.ok(line.replace(flag, '').replace(/\[.*?\]/g, '').trim().length > 3, `${flag} has no description`);
  }
});

test('make-tiny-model then info --json', () => {
  const out = join(testDir(), 'cli-tiny.gguf');
  const made = cli('make-tiny-model', '--arch', 'llama', '--out', out, '--layers', '3', '--json');
  assert.equal(made.code, 0, made.err);
  const m = JSON.parse(made.out) as { bytes: number; arch: string };
  assert.equal(m.arch, 'llama');
  assert.ok(m.bytes > 1e6);
  const info = cli('info', '--model', out, '--json', '--device', 'cpu');
  assert.equal(info.code, 0, info.err);
  const j = JSON.parse(info.out) as { model: { arch: string; nLayer: number }; devices: { type: string }[]; build: { cuda: boolean } };
  assert.equal(j.model.arch, 'llama');
  assert.equal(j.model.nLayer, 3);
  assert.ok(j.devices.some((d) => d.type === 'cpu'));
  assert.equal(typeof j.build.cuda, 'boolean');
});

test('make-tiny-model --embd-type f32: the embedding table in f32, the rest as before', () => {
  const made = (name: string, ...flags: string[]) => {
    const r = cli('make-tiny-model', '--out', join(testDir(), name), '--json', ...flags);
    assert.equal(r.code, 0, r.err);
    return (JSON.parse(r.out) as { bytes: number }).bytes;
  };
  const f16 = made('embd-f16.gguf');
  const f32 = made('embd-f32.gguf', '--embd-type', 'f32');
  // qwen2 ties the output to the embedding: one table of 151,936 × 64 grows by 2 bytes a value
  // (up to the 32-byte alignment of the tensors that follow it)
  assert.ok(Math.abs(f32 - f16 - 151936 * 64 * 2) <= 32, `${f32} - ${f16}`);
  const info = cli('info', '--model', join(testDir(), 'embd-f32.gguf'), '--json', '--device', 'cpu');
  assert.equal(info.code, 0, info.err);
  assert.equal((JSON.parse(info.out) as { model: { weightType: string } }).model.weightType, 'f32');
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'embd-bad.gguf'), '--embd-type', 'q8_0'), 2, /Invalid values/);
});

test('missing model file: one line, exit 1, no stack', () => {
  assertOneLineError(cli('info', '--model', '/nonexistent/m.gguf'), 1, /\/nonexistent\/m\.gguf: no such file/);
});

test('usage errors exit 2', () => {
  assertOneLineError(cli('make-tiny-model'), 2, /Missing required argument: out/);
  assertOneLineError(cli('no-such-command'), 2, /Unknown argument|Did you mean/);
  assertOneLineError(cli(), 2, /^rrr-native: choose a command: train, eval, bench, export, make-tiny-model, info \(see --help\)$/);
  assertOneLineError(cli('trian'), 2, /^rrr-native: unknown command 'trian'\. Did you mean train\? \(see --help\)$/);
  assertOneLineError(cli('make-tiny-model', '--out', 'x.gguf', '--arch', 'gpt2'), 2, /Invalid values/);
});

test('a refused weight type leaves no file behind', () => {
  const dir = join(testDir(), 'refused');
  const out = join(dir, 'm.gguf');
  const r0 = cli('make-tiny-model', '--out', out);
  assertOneLineError(r0, 1, /could not write|No such file|cannot/);
  assert.ok(!existsSync(dir));
  const out2 = join(testDir(), 'bad-type.gguf');
  assertOneLineError(cli('make-tiny-model', '--out', out2, '--type', 'q9_9'), 1, /--type: unknown weight type 'q9_9'/);
  assertOneLineError(cli('make-tiny-model', '--out', out2, '--type', 'q4_K'), 1, /not a multiple of the block size 256/);
  assertOneLineError(cli('make-tiny-model', '--out', testDir()), 1, /^rrr-native: --out .*: is a folder \(expected the path of the \.gguf file to write\)$/);
  assert.deepEqual(readdirSync(testDir()).filter((f) => f.startsWith('bad-type')), []);
});

test('bad flag values: one line naming the flag, before any run folder is made', async () => {
  const model = await tinyModel();
  const out = join(testDir(), 'bad-flags-run');
  const train = (...flags: string[]) => cli('train', '--model', model, '--device', 'cpu', '--out', out, ...flags);
  const cases: [string[], RegExp][] = [
    [['--steps', '0'], /^rrr-native: --steps: expected a whole number ≥ 1, got 0$/],
    [['--threads', '-1'], /^rrr-native: --threads: expected a whole number ≥ 0, got -1$/],
    [['--seed', '1.5'], /^rrr-native: --seed: expected a whole number, got 1.5$/],
    [['--seed', 'NaN'], /^rrr-native: --seed: expected a number, got 'NaN'$/],
    [['--limit', '-1'], /^rrr-native: --limit: expected a whole number ≥ 1, got -1$/],
    [['--generate', '0'], /^rrr-native: --generate: expected a whole number ≥ 1, got 0$/],
    [['--task', 'countdown', '--data', join(testDir(), 'some.jsonl'), '--generate', '5'], /^rrr-native: --generate: the items come from --data .*some\.jsonl; give one of the two$/],
    [['--alpha', '-1'], /^rrr-native: --alpha: expected a number > 0, got -1$/],
    [['--group-size', '1'], /^rrr-native: --group-size: must be an integer in \[2, 1024\] \(got 1\)$/],
    [['--targets', 'q,,k'], /^rrr-native: --targets: an empty name in 'q,,k' \(expected a comma list of q,k,v,o,gate,up,down\)$/],
    [['--rank', '1e9'], /^rrr-native: --rank: rank 1000000000 exceeds the size of /],
    // Counts past what one process holds: internal errors (an array length, an int32 wrapped) before.
    [['--tasks-per-step', '1e6'], /^rrr-native: --tasks-per-step x --group-size: at most 65536, got 8000000$/],
    [['--generate', '1e12'], /^rrr-native: --generate: at most 10000000, got 1000000000000$/],
    [['--threads', '1e12'], /^rrr-native: --threads: at most 4096, got 1000000000000$/],
    [['--train-memory-gib', '1e-320'], /^rrr-native: --train-memory-gib: 1e-320 GiB is less than a byte$/],
    [['--temperature', '1e300'], /^rrr-native: --temperature: must be a number in \[0\.001, 100\]/],
    // The schedule would refuse it only at the first step, after the first attempts.
    [['--steps', '10', '--warmup-steps', '11'], /^rrr-native: --warmup-steps 11: must be at most --steps \(10\)$/],
    // Number flags as typed: yargs would have made them NaN or 0.
    [['--lr', 'abc'], /^rrr-native: --lr: expected a number, got 'abc'$/],
    [['--lr='], /^rrr-native: --lr: expected a number, got an empty one$/],
    [['--steps', '2', '--lr'], /^rrr-native: --lr: expected a number after it$/],
    [['--no-lr'], /^rrr-native: --no-lr: --lr takes a value, not a negation$/],
    [['--device'], /^rrr-native: --device: expected a value after it$/],
    [['--kept-layers', '99'], /^rrr-native: --kept-layers 99: the model has \d+ layers$/],
    // The longest episode against the context: prompts + 2 × answer + reflection. Under --json,
    // where notes go to stderr, none comes before the refusal.
    [['--json', '--ctx', '40', '--max-answer-tokens', '8', '--max-reflection-tokens', '4'], /^rrr-native: --ctx 40: an episode of item \S+ can take (\d+) tokens \(prompts (\d+), the first answer and the retry 8 each \(--max-answer-tokens\), the reflection 4 \(--max-reflection-tokens\), 12 for their text tokenized again\); raise --ctx or lower those$/],
    // Past 4096 items the count shows a bar, on a terminal only and wiped: still one line.
    [['--generate', '5000', '--ctx', '40'], /^rrr-native: --ctx 40: an episode of item \S+ can take \d+ tokens/],
    // yargs would read these as short flags or as false.
    [['--seed', '-1e1'], /^rrr-native: --seed: '-1e1' would be read as short flags; write --seed=-1e1$/],
    [['--json=yes'], /^rrr-native: --json: a switch; give it alone, or =true or =false \(got 'yes'\)$/],
  ];
  for (const [flags, pattern] of cases) assertOneLineError(train(...flags), 1, pattern);
  // A path flag left empty is not "not given": the demo model or no adapter would stand in.
  assertOneLineError(cli('train', '--out', out, '--model'), 1, /^rrr-native: --model: expected a value after it$/);
  assertOneLineError(cli('eval', '--adapter'), 1, /^rrr-native: --adapter: expected a value after it$/);
  const ctx = train('--ctx', '40', '--max-answer-tokens', '8', '--max-reflection-tokens', '4').err.match(/can take (\d+) tokens \(prompts (\d+)/)!;
  assert.equal(Number(ctx[1]), Number(ctx[2]) + 2 * 8 + 4 + 12);
  assert.ok(!existsSync(out), 'a refused start leaves no run folder');
  // At the length it asks for, the run starts and its steps fit.
  const fits = train('--ctx', ctx[1]!, '--max-answer-tokens', '8', '--max-reflection-tokens', '4', '--steps', '2', '--generate', '16');
  assert.equal(fits.code, 0, fits.err);
  rmSync(out, { recursive: true });
  const evalWith = (...flags: string[]) => cli('eval', '--model', model, '--device', 'cpu', '--generate', '2', ...flags);
  for (const [flags, pattern] of [
    [['--batch-size', '0'], /^rrr-native: --batch-size: expected a whole number ≥ 1, got 0$/],
    [['--batch-size', '1e6'], /^rrr-native: --batch-size: at most 65536, got 1000000$/],
    [['--max-answer-tokens', '0'], /^rrr-native: --max-answer-tokens: expected a whole number ≥ 1, got 0$/],
    [['--ctx', '-5'], /^rrr-native: --ctx: expected a whole number ≥ 16, got -5$/],
    [['--ctx', '40', '--max-answer-tokens', '8', '--max-reflection-tokens', '4'], /^rrr-native: --ctx 40: an episode of item \S+ can take \d+ tokens/],
    [['--threads', '-3'], /^rrr-native: --threads: expected a whole number ≥ 0, got -3$/],
  ] as [string[], RegExp][]) {
    assertOneLineError(evalWith(...flags), 1, pattern);
  }
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--layers', '0'), 1, /^rrr-native: --layers: expected a whole number ≥ 1, got 0$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--output-gain', 'Infinity'), 1, /^rrr-native: --output-gain: expected a number > 0, got Infinity$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--ctx', '1'), 1, /^rrr-native: --ctx: expected a whole number ≥ 16, got 1$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--heads', '3', '--kv-heads', '2'), 1, /^rrr-native: --heads: must be a multiple of --kv-heads$/);
  // These aborted the process inside ggml (exit 134), or wrapped round in the file (--ctx).
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--embd', '1e12'), 1, /^rrr-native: --embd: at most 65536, got 1000000000000$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--ctx', '4294967312'), 1, /^rrr-native: --ctx: at most 2147483647, got 4294967312$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--type', 'f64'), 1, /^rrr-native: --type: f64 cannot be written here \(not a weight type; e\.g\. f32, f16, bf16, q8_0, q4_0, q4_K\)$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--type', 'iq2_xxs'), 1, /^rrr-native: --type: iq2_xxs cannot be written here \(it needs an importance matrix; /);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--copy-offset', '5'), 1, /^rrr-native: --copy-offset: only with --init copy \(random weights copy nothing\)$/);
  assertOneLineError(cli('make-tiny-model', '--out', join(testDir(), 'bad-size.gguf'), '--type', 'q8_K'), 1, /^rrr-native: --type: q8_K cannot be written here \(ggml quantizes no weights to it; /);
  assert.ok(!existsSync(join(testDir(), 'bad-size.gguf')));
});

test('a run folder that is not one: --out a file, a broken run.json, run settings given to --resume', async () => {
  const model = await tinyModel();
  // Not a folder to put a new run in: empty, holding other files, one that cannot be made.
  assertOneLineError(cli('train', '--model', model, '--out', ''), 1, /^rrr-native: --out: expected a value, got an empty one$/);
  const other = join(testDir(), 'not-a-run');
  mkdirSync(other, { recursive: true });
  writeFileSync(join(other, 'notes.txt'), 'x');
  assertOneLineError(cli('train', '--model', model, '--out', other), 1, /^rrr-native: --out .*not-a-run: holds other files and no run; give a new or empty folder$/);
  assertOneLineError(cli('train', '--model', model, '--out', '/proc/rrr-x'), 1, /^rrr-native: --out \/proc\/rrr-x: cannot make the folder \/proc\/rrr-x \(ENOENT\)$/);
  const file = join(testDir(), 'out-is-a-file');
  writeFileSync(file, 'x');
  assertOneLineError(cli('train', '--model', model, '--out', file), 1, /^rrr-native: --out .*out-is-a-file: exists and is not a folder$/);
  const run = join(testDir(), 'broken-run');
  mkdirSync(run, { recursive: true });
  for (const [text, why] of [['{not json', /not a run's settings \(.*JSON.*\)$/], ['{}', /not a run's settings \(version undefined, expected 1\)$/], ['null', /not a run's settings \(a JSON null\)$/]] as const) {
    writeFileSync(join(run, 'run.json'), text);
    assertOneLineError(cli('train', '--resume', '--out', run), 1, why);
  }
  // What a train killed while writing its run.json leaves (its lock and the temporary file) takes a new run.
  const killed = join(testDir(), 'killed-at-start');
  mkdirSync(killed, { recursive: true });
  const gone = String(2 ** 22 - 5);
  writeFileSync(join(killed, 'train.lock'), `${gone}\n`);
  writeFileSync(join(killed, `run.json.tmp-${gone}`), '{');
  const fresh = cli('train', '--model', model, '--device', 'cpu', '--out', killed, '--steps', '1', '--generate', '8');
  assert.equal(fresh.code, 0, fresh.err);
  assert.ok(!existsSync(join(killed, `run.json.tmp-${gone}`)));
});

test('an adapter or a training state given as the model is said to be one', async () => {
  const model = await tinyModel();
  const out = join(testDir(), 'adapter-as-model');
  const r = cli('train', '--model', model, '--device', 'cpu', '--out', out, '--steps', '1', '--generate', '8', '--checkpoint-every', '1');
  assert.equal(r.code, 0, r.err);
  assertOneLineError(cli('info', '--model', join(out, 'adapter.gguf')), 1, /adapter\.gguf: a LoRA adapter, not a model/);
  assertOneLineError(cli('info', '--model', join(out, 'checkpoint', 'state-1.gguf')), 1, /state-1\.gguf: a GGUF of type '\S+', not a model$/);
});

test("a resumed run's damaged files are named in one line; a metrics line cut short is dropped", async () => {
  const model = await tinyModel();
  const run = join(testDir(), 'damaged-run');
  // A negative seed, which --seed takes, resumes too.
  const r = cli('train', '--model', model, '--device', 'cpu', '--out', run, '--steps', '2', '--generate', '8', '--checkpoint-every', '1', '--seed=-5');
  assert.equal(r.code, 0, r.err);
  const keep = Object.fromEntries(['run.json', 'checkpoint/progress.json', 'metrics.jsonl'].map((f) => [f, readFileSync(join(run, f), 'utf8')]));
  const damaged = (file: string, text: string, why: RegExp) => {
    writeFileSync(join(run, file), text);
    assertOneLineError(cli('train', '--resume', '--out', run), 1, why);
    writeFileSync(join(run, file), keep[file]!);
  };
  const cfg = JSON.parse(keep['run.json']!) as Record<string, Record<string, unknown>>;
  damaged('run.json', JSON.stringify({ ...cfg, lora: {} }), /run\.json: lora\.rank must be a whole number ≥ 1 \(got undefined\)$/);
  damaged('run.json', JSON.stringify({ ...cfg, grpo: { ...cfg.grpo, groupSize: 1 } }), /run\.json: grpo, as --group-size: must be an integer in \[2, 1024\] \(got 1\)$/);
  damaged('run.json', JSON.stringify({ ...cfg, tasksPerStep: 0 }), /run\.json: tasksPerStep must be a whole number ≥ 1 \(got 0\)$/);
  const restart = '; remove the checkpoint folder to start the steps again$';
  damaged('checkpoint/progress.json', '{"steps', new RegExp(`progress\\.json: not a checkpoint's progress \\(.*JSON.*\\)${restart}`));
  // {} would have resumed from step 0 on the saved state, 99 as a run that was done: both exit 0.
  damaged('checkpoint/progress.json', '{}', new RegExp(`progress\\.json: stepsDone undefined is not a step count of this run \\(0 to 2\\)${restart}`));
  damaged('checkpoint/progress.json', '{"stepsDone":99}', new RegExp(`progress\\.json: stepsDone 99 is not a step count of this run \\(0 to 2\\)${restart}`));
  damaged('checkpoint/progress.json', '{"stepsDone":1,"state":"../run.json"}', new RegExp(`progress\\.json: state "\\.\\./run\\.json" is not a checkpoint's state file${restart}`));
  // Run flags: another value than the run's is refused; the command that started it, given
  // again with --resume, goes on.
  assertOneLineError(cli('train', '--resume', '--out', run, '--steps', '4'), 1, /^rrr-native: --steps: a resumed run keeps the settings in .*run\.json, where it is 2; start a new run \(another --out\) to change them$/);
  assertOneLineError(cli('train', '--resume', '--out', run, '--rank', '4'), 1, /^rrr-native: --rank: a resumed run keeps the settings in .*, where it is 16; /);
  assertOneLineError(cli('train', '--resume', '--out', run, '--seed', '5'), 1, /^rrr-native: --seed: a resumed run keeps the settings in .*, where it is -5; /);
  const same = cli('train', '--resume', '--model', model, '--device', 'cpu', '--out', run, '--steps', '2', '--generate', '8', '--checkpoint-every', '1', '--seed=-5');
  assert.equal(same.code, 0, same.err);
  assert.match(same.out, /^the run had done all its 2 steps$/m);
  damaged('metrics.jsonl', '{"step":0}\nnot json\n', /metrics\.jsonl:2: not a step's metrics; remove the line \(or the file\) to go on$/);
  // A full disk cut the last step's line short: it is after the last checkpoint, and redone.
  writeFileSync(join(run, 'checkpoint', 'progress.json'), '{"stepsDone":1,"state":"state-2.gguf"}\n');
  writeFileSync(join(run, 'metrics.jsonl'), keep['metrics.jsonl']!.split('\n')[0] + '\n{"step":1,"reward');
  const again = cli('train', '--resume', '--out', run);
  assert.equal(again.code, 0, again.err);
  assert.equal(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  // A whole last step without its newline stays.
  writeFileSync(join(run, 'metrics.jsonl'), readFileSync(join(run, 'metrics.jsonl'), 'utf8').trimEnd());
  const done = cli('train', '--resume', '--out', run);
  assert.equal(done.code, 0, done.err);
  assert.match(done.out, /^the run had done all its 2 steps$/m);
  assert.equal(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
});

test("the trainer's refusals are said in the command's flags; the context check's advice fits its cause", () => {
  const said = (message: string, prefix: '--' | '--train-', own = {}, allNodes?: string) => (inFlags(new RrrError(message), prefix, own, allNodes) as Error).message;
  assert.equal(said('fusedAttnF16: it sets how; give fusedAttnBackward too', '--'), '--fused-attn-f16: it sets how; give --fused-attn-backward too');
  assert.equal(said('swigluGrad16: x; give gateUp16 too', '--train-'), '--train-swiglu-grad-16: x; give --train-gate-up-16 too');
  // Whole names only: fusedHead is not a part of fusedHeadSteps.
  assert.equal(said('fusedHeadSteps: x', '--train-', { fusedHeadSteps: '--train-fused-head-steps' }), '--train-fused-head-steps: x');
  assert.equal(said("fusedHead: the model's output weight is q8_0", '--', {}, '--all-nodes'), "--all-nodes (--fused-head): the model's output weight is q8_0");
  assert.equal(said('flashAttn: no kernel', '--train-'), '--flash-attn: no kernel');

  const s = { maxAnswerTokens: 8, maxReflectionTokens: 4 };
  const e = { itemId: 'i', promptTokens: 40, slackTokens: 0, tokens: 60 };
  assert.doesNotThrow(() => contextFlag(60, 100, e, s));
  assert.throws(() => contextFlag(50, 100, e, s), /^RrrError: --ctx 50: an episode of item i can take 60 tokens \(prompts 40, .*, 0 for their text tokenized again\); raise --ctx or lower those$/);
  // Past the model's own context, a larger --ctx cannot help.
  assert.throws(() => contextFlag(50, 55, e, s), /^RrrError: --ctx 50: .*; lower those: the model's context is 55 tokens$/);
  assert.throws(() => contextFlag(2048, 55, e, s), /; lower those: the model's context is 55 tokens$/);
});

test('a dataset that repeats items keeps them and says how many', async () => {
  const data = join(testDir(), 'repeats.jsonl');
  writeFileSync(data, '{"nums": [1, 2, 3], "target": 6}\n{"nums": [2, 3, 4], "target": 9}\n{"nums": [1, 2, 3], "target": 6}\n{"nums": [1, 2, 3], "target": 6}\n');
  const r = await loadItems(taskFor('countdown'), { data, seed: 1, skipBadLines: false }, () => {});
  assert.equal(r.items.length, 4);
  assert.equal(r.source, `${data} (2 of them repeat an earlier item; kept)`);
  const once = await loadItems(taskFor('countdown'), { data, seed: 1, limit: 2, skipBadLines: false }, () => {});
  assert.equal(once.source, data);
});

test('printed commands quote what the shell would split or expand', () => {
  const cases = ['runs/plain-2026.gguf', '/tmp/with space/a.gguf', "it's/x", 'a$b`c`*?[x]', 'tab\there', ''];
  for (const s of cases) {
    const q = shellArg(s);
    const back = spawnSync('sh', ['-c', `printf %s ${q}`], { encoding: 'utf8' });
    assert.equal(back.stdout, s, `${JSON.stringify(s)} as ${q}`);
  }
  assert.equal(shellArg('runs/plain-2026.gguf'), 'runs/plain-2026.gguf');
});

test('Ctrl-C while a model file is written leaves neither it nor its temporary file', async () => {
  const out = join(testDir(), 'interrupted.gguf');
  // A 0.5B-shaped model of two layers: over 300 MB, seconds to write on two cores.
  const child = spawn(process.execPath, [main, 'make-tiny-model', '--preset', 'qwen2.5-0.5b', '--layers', '2', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const tmp = `${out}.tmp-${child.pid}`;
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (c, s) => r([c, s])));
  let sent = false;
  for (let i = 0; i < 3000 && child.exitCode === null; i++) {
    if (existsSync(tmp)) {
      child.kill('SIGINT');
      sent = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const [code, signal] = await closed;
  assert.ok(sent, `the temporary file never appeared (exit ${code}): ${err}`);
  assert.equal(signal, 'SIGINT', err);
  assert.match(err, /rrr-native: stopped; .*interrupted\.gguf was not written/);
  assert.deepEqual(readdirSync(testDir()).filter((f) => f.startsWith('interrupted.gguf')), []);

  // Before the file is opened, while the weights are made: the addon's thread must not go on to
  // write it (process.exit waited for that thread, which wrote and renamed the whole file).
  const early = spawn(process.execPath, [main, 'make-tiny-model', '--preset', 'qwen2.5-0.5b', '--layers', '2', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let earlyErr = '';
  early.stderr.on('data', (d: Buffer) => (earlyErr += d.toString()));
  const earlyClosed = new Promise<[number | null, NodeJS.Signals | null]>((r) => early.on('close', (c, s) => r([c, s])));
  await new Promise((r) => setTimeout(r, 700));
  assert.ok(!existsSync(tmp.replace(String(child.pid), String(early.pid))), 'interrupted before the write, as meant');
  early.kill('SIGINT');
  const [, earlySignal] = await earlyClosed;
  assert.equal(earlySignal, 'SIGINT', earlyErr);
  assert.deepEqual(readdirSync(testDir()).filter((f) => f.startsWith('interrupted.gguf')), []);
});

#!/usr/bin/env node
// Configures and builds ggml + libllama + the addon with cmake-js. Compiler chatter goes to
// build/native-build.log; the terminal gets one line per step and a progress figure, and a
// failure names the step and shows the end of the log.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { detectCuda, cudaArchitectures } from './cuda-detect.mjs';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const buildDir = join(root, 'build', 'cmake');
const addonPath = join(root, 'build', 'Release', 'rrr_native.node');
const logPath = join(buildDir, 'native-build.log');
const configPath = join(buildDir, 'rrr-build-config.json');
const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');

export class BuildError extends Error {}

function runLogged(step, args, log, onLine) {
  return new Promise((resolve, reject) => {
    log.write(`\n=== ${step}: cmake-js ${args.join(' ')}\n`);
    const child = spawn(process.execPath, [cmakeJs, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const feed = (chunk) => {
      const s = chunk.toString();
      log.write(s);
      tail = (tail + s).slice(-4000);
      for (const line of s.split('\n')) onLine?.(line);
    };
    child.stdout.on('data', feed);
    child.stderr.on('data', feed);
    child.on('error', (e) => reject(new BuildError(`${step} could not start cmake-js: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) return resolve();
      const errs = tail.split('\n').filter((l) => /error|Error|fatal|not found/.test(l)).slice(-6);
      reject(new BuildError(`${step} failed (exit ${code}); see ${logPath}\n${(errs.length ? errs : tail.split('\n').slice(-8)).join('\n')}`));
    });
  });
}

export async function buildNative({ log: say = (m) => console.log(`rrr-native: ${m}`) } = {}) {
  if (!existsSync(cmakeJs)) throw new BuildError('cmake-js is missing from node_modules; run `npm install` first');
  mkdirSync(buildDir, { recursive: true });
  const cuda = detectCuda();
  const jobs = Number(process.env.RRR_BUILD_JOBS) || availableParallelism();
  const defs = {
    CMAKE_BUILD_TYPE: 'Release',
    RRR_CUDA: cuda.enabled ? 'ON' : 'OFF',
  };
  if (cuda.enabled) defs.CMAKE_CUDA_ARCHITECTURES = cudaArchitectures();
  if (process.env.RRR_NATIVE_CPU === '0') defs.GGML_NATIVE = 'OFF';
  const want = JSON.stringify(defs);
  const have = existsSync(configPath) ? readFileSync(configPath, 'utf8') : '';
  const cdArgs = Object.entries(defs).map(([k, v]) => `--CD${k}=${v}`);
  const common = ['--out', 'build/cmake', '--config', 'Release', '--parallel', String(jobs), '--log-level', 'info'];

  say(`backend: CPU${cuda.enabled ? ` + CUDA (${defs.CMAKE_CUDA_ARCHITECTURES})` : ''} — ${cuda.reason}`);
  const log = createWriteStream(logPath, { flags: 'a' });
  const t0 = Date.now();
  try {
    if (want !== have || !existsSync(join(buildDir, 'CMakeCache.txt'))) {
      say('configuring (cmake)…');
      await runLogged('configure', ['configure', ...common, ...cdArgs], log);
      writeFileSync(configPath, want);
    }
    let last = -1;
    const tty = process.stdout.isTTY;
    await runLogged('build', ['build', ...common], log, (line) => {
      // Make prints "[ 45%]", Ninja "[12/345]".
      const m = /^\[\s*(\d+)%\]/.exec(line) ?? /^\[(\d+)\/(\d+)\]/.exec(line);
      if (!m) return;
      const pct = m[2] ? Math.floor((100 * Number(m[1])) / Number(m[2])) : Number(m[1]);
      if (tty) process.stdout.write(`\rrrr-native: compiling ${pct}%   `);
      else if (pct >= last + 20 || (pct === 100 && last !== 100)) { say(`compiling ${pct}%`); last = pct; }
    });
    if (tty) process.stdout.write('\n');
  } catch (e) {
    if (cuda.enabled && e instanceof BuildError) {
      e.message += '\n(the CUDA build needs a CUDA toolkit with cuBLAS; RRR_CUDA=0 builds the CPU backend only)';
    }
    throw e;
  } finally {
    await new Promise((r) => log.end(r));
  }
  const addon = addonPath;
  if (!existsSync(addon)) throw new BuildError(`build finished but ${addon} is missing; see ${logPath}`);
  say(`native addon ready in ${((Date.now() - t0) / 1000).toFixed(0)} s (${addon.slice(root.length + 1)})`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildNative().catch((e) => {
    console.error(`rrr-native: ${e instanceof BuildError ? e.message : e.stack}`);
    process.exit(1);
  });
}

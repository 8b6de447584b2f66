#!/usr/bin/env node
// Materialises the pinned llama.cpp source tree into third_party/llama.cpp from the npm
// package that ships it as a git bundle. `npm pack` fetches only that tarball: the package's
// own install scripts and prebuilt binaries never run. A stamp file makes a second run free.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, renameSync, writeFileSync, mkdtempSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const pin = JSON.parse(readFileSync(join(here, 'llama.json'), 'utf8'));
export const llamaDir = join(here, 'llama.cpp');
const stampPath = join(llamaDir, '.rrr-stamp');
const stamp = `${pin.package}@${pin.version} ${pin.commit}`;

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...opts });
}

export function llamaIsCurrent() {
  return existsSync(stampPath) && readFileSync(stampPath, 'utf8').trim() === stamp;
}

export function fetchLlama({ log = console.log } = {}) {
  if (llamaIsCurrent()) {
    log(`llama.cpp ${pin.commit.slice(0, 10)} already present (${pin.package}@${pin.version})`);
    return llamaDir;
  }
  const work = mkdtempSync(join(tmpdir(), 'rrr-llama-'));
  try {
    log(`fetching ${pin.package}@${pin.version} (llama.cpp source bundle)`);
    const packOut = run('npm', ['pack', `${pin.package}@${pin.version}`, '--silent', '--pack-destination', work]);
    const tarball = join(work, packOut.trim().split('\n').pop());
    run('tar', ['-xzf', tarball, '-C', work, pin.bundle]);
    const staging = join(here, `.llama.cpp.partial`);
    rmSync(staging, { recursive: true, force: true });
    run('git', ['clone', '--quiet', join(work, pin.bundle), staging]);
    const head = run('git', ['-C', staging, 'rev-parse', 'HEAD']).trim();
    if (head !== pin.commit) {
      throw new Error(`bundle in ${pin.package}@${pin.version} is at ${head}, expected ${pin.commit} (third_party/llama.json)`);
    }
    writeFileSync(join(staging, '.rrr-stamp'), stamp + '\n');
    // Rename last so an interrupted fetch never leaves a half tree that looks complete.
    rmSync(llamaDir, { recursive: true, force: true });
    renameSync(staging, llamaDir);
    log(`llama.cpp ${pin.commit.slice(0, 10)} materialised in third_party/llama.cpp`);
    return llamaDir;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    fetchLlama();
  } catch (e) {
    const detail = e.stderr ? String(e.stderr).trim().split('\n').slice(-3).join(' | ') : e.message;
    console.error(`rrr-native: fetching llama.cpp failed: ${detail}`);
    process.exit(1);
  }
}

// Decides whether the native build includes ggml-cuda. A toolkit without cuBLAS cannot link
// ggml-cuda, so nvcc alone is not enough: we look for both. RRR_CUDA=1/0 overrides.
import { existsSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';

function findNvcc() {
  const roots = [process.env.CUDA_PATH, process.env.CUDA_HOME, process.env.CUDAToolkit_ROOT, '/usr/local/cuda', '/opt/cuda']
    .filter(Boolean);
  for (const r of roots) {
    const p = join(r, 'bin', 'nvcc');
    if (existsSync(p)) return { nvcc: p, root: r };
  }
  try {
    const p = execFileSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).trim();
    if (p) {
      // nvcc may be a wrapper script outside the toolkit; ask it where it lives.
      let root = dirname(dirname(p));
      try {
        const out = execFileSync(p, ['--dryrun', '--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        const m = /TOP=(\S+)/.exec(out);
        if (m && m[1]) root = m[1];
      } catch (e) {
        const m = /TOP=(\S+)/.exec(String(e.stderr ?? ''));
        if (m && m[1]) root = m[1];
      }
      return { nvcc: p, root };
    }
  } catch { /* not on PATH */ }
  return null;
}

function hasCublas(root) {
  const dirs = [join(root, 'lib64'), join(root, 'lib'), '/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib/aarch64-linux-gnu'];
  const targets = join(root, 'targets');
  if (existsSync(targets)) {
    for (const t of readdirSync(targets)) dirs.push(join(targets, t, 'lib'));
  }
  return dirs.some((d) => existsSync(d) && readdirSync(d).some((f) => /^libcublas\.so/.test(f)));
}

/** @returns {{enabled: boolean, reason: string, root?: string}} */
export function detectCuda(env = process.env) {
  const force = env.RRR_CUDA;
  if (force === '0') return { enabled: false, reason: 'RRR_CUDA=0' };
  const found = findNvcc();
  if (force === '1') {
    if (!found) throw new Error('RRR_CUDA=1 but no nvcc was found (set CUDA_PATH to the CUDA toolkit)');
    return { enabled: true, reason: 'RRR_CUDA=1', root: found.root };
  }
  if (!found) return { enabled: false, reason: 'no CUDA toolkit (nvcc) found' };
  if (!hasCublas(found.root)) return { enabled: false, reason: `CUDA toolkit at ${found.root} has no cuBLAS` };
  return { enabled: true, reason: `CUDA toolkit with cuBLAS at ${found.root}`, root: found.root };
}

export function cudaArchitectures(env = process.env) {
  if (env.CMAKE_CUDA_ARCHITECTURES) return env.CMAKE_CUDA_ARCHITECTURES;
  try {
    execFileSync('nvidia-smi', ['-L'], { stdio: 'ignore' });
    return 'native';
  } catch {
    // No visible GPU at build time: cover the consumer and data-centre cards people train on.
    return '86;89;90;120';
  }
}

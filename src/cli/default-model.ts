// The embedded default model: a tiny random qwen2 model with a real tokenizer, generated once
// into the user's cache folder so `rrr-native train` runs with no arguments and no download.
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { makeTinyModel } from '../engine/tiny-model.js';

export function defaultModelPath(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'rrr-native', 'default-qwen2-tiny-v1.gguf');
}

export async function ensureDefaultModel(log: (line: string) => void): Promise<string> {
  const path = defaultModelPath();
  if (!existsSync(path)) {
    log(`generating the embedded default model (tiny random qwen2, real Qwen2 tokenizer) at ${path}`);
    mkdirSync(dirname(path), { recursive: true });
    await makeTinyModel({ arch: 'qwen2', out: path, seed: 42 });
  }
  return path;
}

#!/usr/bin/env node
// `npm install` entry: materialise the pinned llama.cpp, then build the addon.
import { fetchLlama } from '../third_party/fetch-llama.mjs';
import { buildNative, BuildError } from './build-native.mjs';

const say = (m) => console.log(`rrr-native: ${m}`);
try {
  say('step 1/2: llama.cpp source');
  fetchLlama({ log: say });
} catch (e) {
  const detail = e.stderr ? String(e.stderr).trim().split('\n').slice(-3).join(' | ') : e.message;
  console.error(`rrr-native: step 1/2 (fetch llama.cpp) failed: ${detail}`);
  process.exit(1);
}
try {
  say('step 2/2: native addon (ggml + libllama + rrr_native)');
  await buildNative({ log: say });
} catch (e) {
  console.error(`rrr-native: step 2/2 (native build) failed: ${e instanceof BuildError ? e.message : e.stack}`);
  process.exit(1);
}

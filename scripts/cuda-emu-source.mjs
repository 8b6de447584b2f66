#!/usr/bin/env node
// Turns one of our CUDA sources (native/cuda/*.cu) into C++ that builds against
// native/cuda-emu/include (builds without CUDA: the kernels then run on the CPU, see
// cuda_runtime.h there). Two things are not C++: a launch, `kernel<<<grid, block, shared,
// stream>>>(args);`, becomes `::rrr_emu::launch([&]() { kernel(args); }, grid, block, shared,
// stream);`, and `extern __shared__ T name[];` a pointer to the launch's dynamic shared memory.
// Line breaks are kept, so the compiler's messages point at the .cu file's lines.
//   node scripts/cuda-emu-source.mjs in.cu out.cpp
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { relative, resolve } from 'node:path';

const [src, out] = process.argv.slice(2);
if (!src || !out) {
  console.error('usage: node scripts/cuda-emu-source.mjs in.cu out.cpp');
  process.exit(2);
}

// The index just past the parenthesis that closes the one at `open`.
function closing(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; ++i) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')' && --depth === 0) return i + 1;
  }
  throw new Error(`${src}: unbalanced parentheses in a launch at offset ${open}`);
}

export function translate(text) {
  text = text.replace(/extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;/g, '$1 * $2 = ($1 *) ::rrr_emu::dynamic_shared();');
  const launch = /([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<([\s\S]*?)>>>\s*\(/g;
  let result = '';
  let at = 0;
  for (let m; (m = launch.exec(text)); ) {
    const open = m.index + m[0].length - 1;
    const end = closing(text, open);
    const args = text.slice(open + 1, end - 1);
    result += text.slice(at, m.index) + `::rrr_emu::launch([&]() { ${m[1]}(${args}); }, ${m[2]})`;
    at = end;
    launch.lastIndex = end;
  }
  return result + text.slice(at);
}

const text = `#include <cuda_runtime.h>\n#line 1 "${relative(process.cwd(), resolve(src)).replace(/\\/g, '/')}"\n` + translate(readFileSync(src, 'utf8'));
// Written only when changed, so that a build after an unchanged .cu compiles nothing again.
if (!existsSync(out) || readFileSync(out, 'utf8') !== text) writeFileSync(out, text);

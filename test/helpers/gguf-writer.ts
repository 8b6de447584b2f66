// A minimal GGUF v3 writer for tests that need files our own tiny-model writer refuses to make
// (unknown architectures, inconsistent shapes). Supports u32/f32/string values and f32 tensors.
import { writeFileSync } from 'node:fs';

type Value = { u32: number } | { f32: number } | { str: string };

export interface RawTensor {
  name: string;
  shape: number[]; // ggml order: ne0 first
  /** Filled with this value. */
  fill?: number;
  /** Or these values, in ggml order. */
  data?: Float32Array;
}

const ALIGN = 32;

class Buf {
  private parts: Buffer[] = [];
  size = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.size += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  pad(): void {
    const r = this.size % ALIGN;
    if (r) this.push(Buffer.alloc(ALIGN - r));
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export function writeGguf(path: string, kv: Record<string, Value>, tensors: RawTensor[]): void {
  const b = new Buf();
  b.push(Buffer.from('GGUF'));
  b.u32(3);
  b.u64(tensors.length);
  b.u64(Object.keys(kv).length);
  for (const [k, v] of Object.entries(kv)) {
    b.str(k);
    if ('u32' in v) {
      b.u32(4); // GGUF_TYPE_UINT32
      b.u32(v.u32);
    } else if ('f32' in v) {
      b.u32(6); // GGUF_TYPE_FLOAT32
      b.f32(v.f32);
    } else {
      b.u32(8); // GGUF_TYPE_STRING
      b.str(v.str);
    }
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    b.str(t.name);
    b.u32(t.shape.length);
    for (const d of t.shape) b.u64(d);
    b.u32(0); // GGML_TYPE_F32
    b.u64(offset);
    const bytes = t.shape.reduce((a, c) => a * c, 1) * 4;
    sizes.push(bytes);
    offset += Math.ceil(bytes / ALIGN) * ALIGN;
  }
  b.pad();
  tensors.forEach((t, i) => {
    const data = Buffer.alloc(Math.ceil(sizes[i]! / ALIGN) * ALIGN);
    for (let j = 0; j < sizes[i]! / 4; j++) data.writeFloatLE(t.data ? t.data[j]! : (t.fill ?? 0.01), j * 4);
    b.push(data);
  });
  writeFileSync(path, b.concat());
}

/** A complete, valid-shaped llama-style model (no tokenizer) with one tensor optionally reshaped. */
export function writeRawModel(
  path: string,
  opts: { arch?: string; badTensor?: { name: string; shape: number[] }; drop?: string } = {},
): void {
  const arch = opts.arch ?? 'llama';
  const E = 8, F = 16, V = 32, H = 2;
  const kv: Record<string, Value> = {
    'general.architecture': { str: arch },
    [`${arch}.embedding_length`]: { u32: E },
    [`${arch}.block_count`]: { u32: 1 },
    [`${arch}.feed_forward_length`]: { u32: F },
    [`${arch}.attention.head_count`]: { u32: H },
    [`${arch}.attention.head_count_kv`]: { u32: H },
    [`${arch}.context_length`]: { u32: 64 },
    [`${arch}.attention.layer_norm_rms_epsilon`]: { f32: 1e-5 },
  };
  const tensors: RawTensor[] = [
    { name: 'token_embd.weight', shape: [E, V] },
    { name: 'output_norm.weight', shape: [E] },
    { name: 'output.weight', shape: [E, V] },
    { name: 'blk.0.attn_norm.weight', shape: [E] },
    { name: 'blk.0.attn_q.weight', shape: [E, E] },
    { name: 'blk.0.attn_k.weight', shape: [E, E] },
    { name: 'blk.0.attn_v.weight', shape: [E, E] },
    { name: 'blk.0.attn_output.weight', shape: [E, E] },
    { name: 'blk.0.ffn_norm.weight', shape: [E] },
    { name: 'blk.0.ffn_gate.weight', shape: [E, F] },
    { name: 'blk.0.ffn_up.weight', shape: [E, F] },
    { name: 'blk.0.ffn_down.weight', shape: [F, E] },
  ];
  if (opts.badTensor) {
    const t = tensors.find((x) => x.name === opts.badTensor!.name);
    if (!t) throw new Error(`no tensor ${opts.badTensor.name}`);
    t.shape = opts.badTensor.shape;
  }
  writeGguf(path, kv, opts.drop ? tensors.filter((t) => t.name !== opts.drop) : tensors);
}

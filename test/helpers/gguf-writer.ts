// A minimal GGUF v3 writer for tests that need files our own tiny-model writer refuses to make
// (unknown architectures, inconsistent shapes). Supports u32/f32/f64/string values and f32, f16 and
// q8_0 tensors (q8_0 as llama.cpp's converter writes LoRA tensors with --outtype q8_0).
import { writeFileSync } from 'node:fs';

type Value = { u32: number } | { f32: number } | { f64: number } | { str: string };

export interface RawTensor {
  name: string;
  shape: number[]; // ggml order: ne0 first
  /** Filled with this value. */
  fill?: number;
  /** Or these values, in ggml order. */
  data?: Float32Array;
  /** Stored as (default f32); q8_0 needs ne0 to be a multiple of 32. */
  type?: 'f32' | 'f16' | 'q8_0';
}

const TYPE_ID = { f32: 0, f16: 1, q8_0: 8 } as const;

/** IEEE half-precision bits of `v`, rounded to nearest even (normal and subnormal numbers). */
export function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    const half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
  }
  const half = (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
}

/** Bytes of `values` in `type`: f16 halves, or q8_0 blocks of 32 (an f16 scale, 32 int8). */
function encode(values: Float32Array, type: 'f32' | 'f16' | 'q8_0'): Buffer {
  if (type === 'f32') return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  if (type === 'f16') {
    const b = Buffer.alloc(values.length * 2);
    values.forEach((v, i) => b.writeUInt16LE(toHalf(v), i * 2));
    return b;
  }
  const b = Buffer.alloc((values.length / 32) * 34);
  for (let k = 0; k < values.length / 32; k++) {
    const block = values.subarray(k * 32, k * 32 + 32);
    const d = block.reduce((a, v) => Math.max(a, Math.abs(v)), 0) / 127;
    b.writeUInt16LE(toHalf(d), k * 34);
    block.forEach((v, i) => b.writeInt8(d ? Math.round(v / d) : 0, k * 34 + 2 + i));
  }
  return b;
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
    } else if ('f64' in v) {
      b.u32(12); // GGUF_TYPE_FLOAT64
      const d = Buffer.alloc(8);
      d.writeDoubleLE(v.f64);
      b.push(d);
    } else {
      b.u32(8); // GGUF_TYPE_STRING
      b.str(v.str);
    }
  }
  let offset = 0;
  const bodies: Buffer[] = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, c) => a * c, 1);
    const body = encode(t.data ?? new Float32Array(n).fill(t.fill ?? 0.01), t.type ?? 'f32');
    bodies.push(body);
    b.str(t.name);
    b.u32(t.shape.length);
    for (const d of t.shape) b.u64(d);
    b.u32(TYPE_ID[t.type ?? 'f32']);
    b.u64(offset);
    offset += Math.ceil(body.length / ALIGN) * ALIGN;
  }
  b.pad();
  for (const body of bodies) {
    const data = Buffer.alloc(Math.ceil(body.length / ALIGN) * ALIGN);
    body.copy(data);
    b.push(data);
  }
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

/**
 * Small deterministic PRNG for data generation and anything else that must
 * replay bit-for-bit from a seed (e.g. `train --resume`).
 *
 * Construction: a Weyl sequence (state += 0x9E3779B9, the 32-bit golden-ratio
 * increment) passed through the murmur3 32-bit finalizer. The whole state is
 * one uint32, so it can be saved in a checkpoint and restored exactly. The
 * period is 2^32 draws, which is plenty for generating task instances; it is
 * not meant for cryptography or for sampling tokens (that happens natively).
 */
export class Rng {
  private s: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) {
      throw new RangeError(`seed must be an integer (got ${seed})`);
    }
    // Fold the seed into 32 bits; negative and >2^32 seeds stay distinct
    // enough for practical use and never throw.
    this.s = (seed ^ Math.floor(seed / 0x1_0000_0000)) >>> 0;
  }

  /** The full generator state, for checkpoints. */
  get state(): number {
    return this.s;
  }

  set state(value: number) {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      throw new RangeError(`rng state must be a uint32 (got ${value})`);
    }
    this.s = value;
  }

  /** Uniform uint32. */
  nextU32(): number {
    this.s = (this.s + 0x9e37_79b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85eb_ca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2_ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** Uniform float in [0, 1) with 32 bits of randomness. */
  next(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /**
   * Uniform integer in [lo, hi], both inclusive. Rejection sampling keeps it
   * unbiased (plain modulo would favour small values when the range does not
   * divide 2^32).
   */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi < lo) {
      throw new RangeError(`invalid integer range [${lo}, ${hi}]`);
    }
    const range = hi - lo + 1;
    if (range > 0x1_0000_0000) {
      throw new RangeError(`integer range [${lo}, ${hi}] is wider than 2^32`);
    }
    const limit = Math.floor(0x1_0000_0000 / range) * range;
    let u = this.nextU32();
    while (u >= limit) u = this.nextU32();
    return lo + (u % range);
  }

  /** A uniformly chosen element; throws on an empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('cannot pick from an empty array');
    return items[this.int(0, items.length - 1)] as T;
  }

  /** Fisher–Yates shuffle, in place; returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      const t = items[i] as T;
      items[i] = items[j] as T;
      items[j] = t;
    }
    return items;
  }
}

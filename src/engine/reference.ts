// libllama's own inference over the same GGUF: the yardstick our engine is tested and
// benchmarked against, never used for training.
import { addon, type RawReference } from './native.js';
import { fromNative, RrrError } from './errors.js';
import type { Logits, ReferenceOptions } from './types.js';

export class ReferenceModel {
  private raw: RawReference | undefined;
  private constructor(raw: RawReference) {
    this.raw = raw;
  }

  static async load(path: string, opts: ReferenceOptions = {}): Promise<ReferenceModel> {
    try {
      return new ReferenceModel(await addon().NativeReference.load(path, opts));
    } catch (e) {
      throw fromNative(e);
    }
  }

  async logits(seqs: (Int32Array | number[])[]): Promise<Logits> {
    if (!this.raw) throw new RrrError('reference model has been disposed');
    try {
      return await this.raw.logits(seqs.map((s) => (s instanceof Int32Array ? s : Int32Array.from(s))));
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Applies a LoRA GGUF through libllama's own adapter loader (scale multiplies alpha/rank);
   * null removes it.
   */
  async setAdapter(path: string | null, scale = 1): Promise<void> {
    if (!this.raw) throw new RrrError('reference model has been disposed');
    try {
      await this.raw.setAdapter(path ?? '', scale);
    } catch (e) {
      throw fromNative(e);
    }
  }

  dispose(): void {
    this.raw?.dispose();
    this.raw = undefined;
  }
}

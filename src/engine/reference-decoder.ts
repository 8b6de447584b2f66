// libllama's batched greedy generation (llama_decode over many sequences, each group's prompt
// prefilled once): what our Generator is tested and benchmarked against.
import { addon, type RawReferenceDecoder } from './native.js';
import { fromNative, RrrError } from './errors.js';
import type { ReferenceDecoderOptions, ReferenceGreedyResult } from './types.js';

export class ReferenceDecoder {
  private raw: RawReferenceDecoder | undefined;
  private constructor(raw: RawReferenceDecoder) {
    this.raw = raw;
  }

  static async load(path: string, opts: ReferenceDecoderOptions = {}): Promise<ReferenceDecoder> {
    try {
      return new ReferenceDecoder(await addon().NativeReferenceDecoder.load(path, opts));
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Each call builds a libllama context sized for its workload (cells for every prompt once plus every completion). */
  async greedy(
    requests: { prompt: Int32Array | number[]; n?: number }[],
    opts: { maxTokens: number; ignoreEos?: boolean },
  ): Promise<ReferenceGreedyResult> {
    if (!this.raw) throw new RrrError('reference decoder has been disposed');
    const groups = requests.map((r) => ({ prompt: r.prompt instanceof Int32Array ? r.prompt : Int32Array.from(r.prompt), n: r.n ?? 1 }));
    try {
      return await this.raw.greedy(groups, opts);
    } catch (e) {
      throw fromNative(e);
    }
  }

  dispose(): void {
    this.raw?.dispose();
    this.raw = undefined;
  }
}

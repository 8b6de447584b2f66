// Typed wrapper over the addon's NativeModel: one loaded GGUF (weights, tokenizer, template).
import { addon, type RawModel, type RawTrainer } from './native.js';
import { fromNative, RrrError } from './errors.js';
import type { ChatMessage, LoadOptions, Logits, ModelInfo } from './types.js';

export class Model {
  private raw: RawModel | undefined;
  readonly info: ModelInfo;

  private constructor(raw: RawModel) {
    this.raw = raw;
    this.info = raw.info() as unknown as ModelInfo;
  }

  /** Loads weights onto the chosen device and the tokenizer; rejects with a one-line RrrError. */
  static async load(path: string, opts: LoadOptions = {}): Promise<Model> {
    try {
      return new Model(await addon().NativeModel.load(path, { device: opts.device ?? 'auto', threads: opts.threads ?? 0 }));
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** The addon object, for other engine classes built on this model (Trainer). */
  get rawModel(): RawModel {
    return this.native;
  }

  private get native(): RawModel {
    if (!this.raw) throw new RrrError('model has been disposed');
    return this.raw;
  }

  /** The addon object, for engine classes built on this model (generator, trainer). */
  get nativeHandle(): RawModel {
    return this.native;
  }

  /** `parseSpecial` lets text like "<|im_end|>" map to its special token, as chat prompts need. */
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Int32Array {
    return this.native.tokenize(text, opts.addSpecial ?? false, opts.parseSpecial ?? false);
  }

  /** How many tokens each text takes, as tokenize() counts them; off the JS thread, on the model's threads. */
  async tokenCounts(texts: string[], opts: { parseSpecial?: boolean } = {}): Promise<Int32Array> {
    try {
      return await this.native.tokenCounts(texts, opts.parseSpecial ?? false);
    } catch (e) {
      throw fromNative(e);
    }
  }

  detokenize(tokens: Int32Array | number[], opts: { renderSpecial?: boolean } = {}): string {
    const t = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    return this.native.detokenize(t, opts.renderSpecial ?? false);
  }

  tokenPiece(id: number, opts: { renderSpecial?: boolean } = {}): string {
    return this.native.tokenPiece(id, opts.renderSpecial ?? false);
  }

  /** The Jinja template text stored in the GGUF, or null when the model has none. */
  get chatTemplate(): string | null {
    return this.native.chatTemplate();
  }

  /** Formats messages with the model's template (chatml when it has none). */
  applyChatTemplate(messages: ChatMessage[], opts: { addAssistant?: boolean } = {}): string {
    try {
      return this.native.applyChatTemplate(messages, opts.addAssistant ?? true);
    } catch (e) {
      throw fromNative(e);
    }
  }

  isEndOfGeneration(token: number): boolean {
    return this.info.eogTokens.includes(token);
  }

  /**
   * Logits for a batch of token sequences (all positions, or only each one's last), with a LoRA
   * adapter applied when `adapter` (a Trainer over this model) is given.
   */
  async forward(
    seqs: (Int32Array | number[])[],
    opts: { lastOnly?: boolean; adapter?: { rawTrainer: RawTrainer } } = {},
  ): Promise<Logits> {
    const batch = seqs.map((s) => (s instanceof Int32Array ? s : Int32Array.from(s)));
    try {
      return await this.native.forward(batch, opts.lastOnly ?? false, opts.adapter?.rawTrainer);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Frees native memory now; a pass still running keeps its data until it finishes. */
  dispose(): void {
    this.raw?.dispose();
    this.raw = undefined;
  }
}

/** Row `row` of a Logits batch as a view (no copy). */
export function logitsRow(l: Logits, row: number): Float32Array {
  return l.logits.subarray(row * l.nVocab, (row + 1) * l.nVocab);
}

export function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

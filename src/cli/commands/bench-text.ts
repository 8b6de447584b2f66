// Bench workloads' prompts: ordinary text, so tokens and attention look like a real prompt's.
import type { Model } from '../../engine/model.js';

/** The first n tokens of `text` tokenized and repeated back to back. */
export function repeatedText(model: Model, text: string, n: number): Int32Array {
  const unit = model.tokenize(text);
  return Int32Array.from({ length: n }, (_, i) => unit[i % unit.length]!);
}

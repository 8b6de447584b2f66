/**
 * Per-token loss weights for the RRR objective. Only the reflection is
 * trained: m_{i,t} = 1 on the tokens of reflection i and 0 on the prompt,
 * the first attempt, the reflection prompt and the retry. The native loss
 * consumes w_{i,t} = m_{i,t}·A_i and divides by Σ m (the number of reflection
 * tokens in the batch), so both are produced here.
 *
 * Indexing: weight t belongs to token t of the sequence, i.e. to the
 * log-probability of predicting token t (from the logits at position t − 1).
 * The engine does the shift; spans here are plain token positions.
 */

/** Half-open token range [start, end) of a reflection inside its sequence. */
export interface TokenSpan {
  start: number;
  end: number;
}

export interface TokenWeights {
  /** w_{i,t}: A_i on reflection tokens, 0 elsewhere. */
  weights: Float32Array[];
  /** m_{i,t}: 1 on reflection tokens, 0 elsewhere (also the KL mask). */
  masks: Uint8Array[];
  /** Σ m over the whole batch: the loss normaliser. */
  maskSum: number;
}

export function reflectionWeights(
  seqLengths: readonly number[],
  spans: readonly TokenSpan[],
  advantages: readonly number[],
): TokenWeights {
  if (spans.length !== seqLengths.length || advantages.length !== seqLengths.length) {
    throw new RangeError(
      `reflectionWeights: ${seqLengths.length} sequences, ${spans.length} spans, ${advantages.length} advantages`,
    );
  }
  const weights: Float32Array[] = [];
  const masks: Uint8Array[] = [];
  let maskSum = 0;
  for (let i = 0; i < seqLengths.length; i++) {
    const len = seqLengths[i] as number;
    const { start, end } = spans[i] as TokenSpan;
    const a = advantages[i] as number;
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`sequence ${i}: bad length ${len}`);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > len) {
      throw new RangeError(`sequence ${i}: span [${start}, ${end}) is not inside [0, ${len})`);
    }
    if (!Number.isFinite(a)) throw new RangeError(`sequence ${i}: advantage ${a} is not finite`);
    const w = new Float32Array(len);
    const m = new Uint8Array(len);
    w.fill(a, start, end);
    m.fill(1, start, end);
    weights.push(w);
    masks.push(m);
    maskSum += end - start;
  }
  return { weights, masks, maskSum };
}

/**
 * Packs per-sequence rows into one row-major [rows × rowLength] buffer, zero
 * padded, for a batched native call. Throws if a row does not fit.
 */
export function packRows(rows: readonly Float32Array[], rowLength: number): Float32Array {
  if (!Number.isSafeInteger(rowLength) || rowLength < 0) throw new RangeError(`bad row length ${rowLength}`);
  const out = new Float32Array(rows.length * rowLength);
  rows.forEach((r, i) => {
    if (r.length > rowLength) throw new RangeError(`row ${i} has ${r.length} tokens, more than ${rowLength}`);
    out.set(r, i * rowLength);
  });
  return out;
}

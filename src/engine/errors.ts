/**
 * A user-facing failure: its message is one line naming the file or flag at fault. The CLI
 * prints the message alone (no stack) and exits non-zero.
 */
export class RrrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RrrError';
  }
}

/**
 * A training step whose gradient came out non-finite even after lowering the loss scale (e.g.
 * non-finite activations): the adapter was not updated, and the next batch may well be fine.
 */
export class NonFiniteGradientError extends RrrError {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteGradientError';
  }
}

/** A generate call whose signal was aborted: it ended after its current step and returns nothing. */
export class GenerationStopped extends RrrError {
  constructor() {
    super('generation stopped on request');
    this.name = 'GenerationStopped';
  }
}

/** Native rejections carry rrr's own one-line message unless they start with "internal error". */
export function fromNative(e: unknown): Error {
  if (e instanceof Error && e.message.startsWith('step: the gradient is not finite')) return new NonFiniteGradientError(e.message);
  if (e instanceof Error && !e.message.startsWith('internal error')) return new RrrError(e.message);
  return e instanceof Error ? e : new Error(String(e));
}

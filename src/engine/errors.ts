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

/** Native rejections carry rrr's own one-line message unless they start with "internal error". */
export function fromNative(e: unknown): Error {
  if (e instanceof Error && !e.message.startsWith('internal error')) return new RrrError(e.message);
  return e instanceof Error ? e : new Error(String(e));
}

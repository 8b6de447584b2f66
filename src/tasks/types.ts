/**
 * The contract between tasks and the RRR loop. A task knows how to load (or
 * generate) its items, how to ask the model for a first attempt, what to say
 * when asking for a reflection, and how to score an answer with a binary
 * verifier. Nothing here touches the model: the loop owns generation.
 */

export type Role = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatMessage {
  role: Role;
  content: string;
}

/** `reason` is a short one-line "why", shown in logs and metrics (e.g. "used 7 twice"). */
export interface VerifyResult {
  ok: boolean;
  reason: string;
}

/** Every item carries a stable id so failure caches and metrics can refer to it. */
export interface TaskItem {
  id: string;
}

/** A dataset record that was rejected and skipped (only with skipBadLines). */
export interface BadLine {
  path: string;
  /** 1-based line number in the file (for JSON array files: the line where the element starts). */
  line: number;
  message: string;
}

export interface LoadOptions {
  /** Collect malformed records in `skipped` instead of failing on the first one. */
  skipBadLines?: boolean;
}

export interface LoadResult<I> {
  items: I[];
  skipped: BadLine[];
  /** sha256 (hex) of the file's bytes as read, where the items came from a file. */
  digest?: string;
}

export interface Task<I extends TaskItem, G = never> {
  readonly name: string;
  /** Asked after a failed first attempt (exact texts from the RRR paper). */
  readonly reflectionPrompt: string;
  /** Asked after the reflection, to get the second attempt. */
  readonly retryPrompt: string;
  /** The first-attempt conversation. */
  buildPrompt(item: I): ChatMessage[];
  /** Binary verifier over the model's raw answer text. Never throws on model output. */
  verify(item: I, answerText: string): VerifyResult;
  /** Reads a dataset file; malformed records throw DataError unless skipBadLines. */
  load(path: string, opts?: LoadOptions): Promise<LoadResult<I>>;
  /** Deterministic generator for tasks that allow it: same (n, seed, opts) → same items. */
  generate?(n: number, seed: number, opts?: G): I[];
}

/** Any of the tasks: their generator options differ, and callers that generate know which task they hold. */
export type AnyTask = Task<TaskItem, any>;

// The Policy the RRR loop samples from, backed by the engine: the model's chat template and
// tokenizer for prompts, the batched Generator for completions.
import type { Generator } from '../engine/generator.js';
import type { Model } from '../engine/model.js';
import type { Completion, GenerateOptions, GenerateRequest } from '../engine/types.js';
import type { ChatMessage } from '../tasks/types.js';
import type { Policy } from './types.js';

export class EnginePolicy implements Policy {
  constructor(
    private readonly model: Model,
    private readonly generator: Generator,
  ) {}

  promptTokens(messages: ChatMessage[]): Int32Array {
    // parseSpecial: the template's own markers (<|im_start|> ...) must become special tokens.
    return this.model.tokenize(this.model.applyChatTemplate(messages), { parseSpecial: true });
  }

  /** promptTokens' lengths for many conversations, counted off the JS thread. */
  promptLengths(conversations: ChatMessage[][]): Promise<Int32Array> {
    return promptLengths(this.model, conversations);
  }

  generate(requests: GenerateRequest[], opts: GenerateOptions): Promise<Completion[][]> {
    return this.generator.generate(requests, opts);
  }
}

/** EnginePolicy.promptTokens' lengths, from the model alone (before a generator is sized by them). */
export function promptLengths(model: Model, conversations: ChatMessage[][]): Promise<Int32Array> {
  return model.tokenCounts(conversations.map((m) => model.applyChatTemplate(m)), { parseSpecial: true });
}

// The contract between the engine and the layers above it (rrr loop, CLI, tests).

export type DeviceName = 'auto' | 'cpu' | 'cuda';

export interface LoadOptions {
  /** 'auto' uses a GPU when the build has one and a device is present. */
  device?: DeviceName;
  /** CPU threads; 0 or undefined means all cores. */
  threads?: number;
}

export interface ModelInfo {
  path: string;
  arch: 'llama' | 'qwen2' | 'qwen3';
  nVocab: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nFf: number;
  nCtxTrain: number;
  ropeBase: number;
  rmsEps: number;
  tiedEmbeddings: boolean;
  /** ggml type name of the projection weights, e.g. "f16", "q4_K". */
  weightType: string;
  weightBytes: number;
  device: string;
  gpu: boolean;
  threads: number;
  bos: number;
  eos: number;
  eogTokens: Int32Array;
  /** "model" when the GGUF carries a template, "chatml" when the documented fallback is used. */
  chatTemplateSource: 'model' | 'chatml';
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

/** Logits of a batch: rows of nVocab floats; sequence i owns rows [rowStart[i], rowStart[i+1]). */
export interface Logits {
  nVocab: number;
  logits: Float32Array;
  rowStart: number[];
}

export interface TinyModelOptions {
  arch?: 'llama' | 'qwen2' | 'qwen3';
  out: string;
  /** Projection weight type: f32, f16, bf16, q8_0, q4_0, q4_K, ... */
  type?: string;
  preset?: TinyPreset;
  nEmbd?: number;
  nLayer?: number;
  nHead?: number;
  nHeadKv?: number;
  headDim?: number;
  nFf?: number;
  nCtx?: number;
  tied?: boolean;
  seed?: number;
  /** GGUF whose tokenizer and chat template are copied (default: llama.cpp's qwen2 vocab). */
  vocab?: string;
}

export type TinyPreset = 'tiny' | 'qwen2.5-0.5b' | 'qwen2.5-1.5b';

export interface DeviceInfo {
  name: string;
  description: string;
  type: 'cpu' | 'gpu';
  memoryFree: number;
  memoryTotal: number;
}

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
  /**
   * Embedding and output table type. Default 16-bit (bf16 beside bf16 weights, else f16), as
   * these tables dominate a tiny model's size; 'f32' makes a model f32 end to end, which gradient
   * checks need: a 16-bit output table rounds the last hidden state to 16 bits on ggml's CPU and
   * accumulates in f16 in ggml-cuda's cuBLAS path.
   */
  embdType?: 'f32' | 'f16' | 'bf16';
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
  /** Gain of the final norm (default 1): higher means sharper next-token distributions. */
  outputGain?: number;
  /** 'random' (default) or 'copy': hand-set weights that copy the token `copyOffset` positions back. */
  init?: 'random' | 'copy';
  copyOffset?: number;
  /** GGUF whose tokenizer and chat template are copied (default: llama.cpp's qwen2 vocab). */
  vocab?: string;
}

export type TinyPreset = 'tiny' | 'qwen2.5-0.5b' | 'qwen2.5-1.5b';

export interface BuildInfo {
  cuda: boolean;
  /** Our CUDA nodes built as plain C++ for the CPU (tests of their code without a GPU). */
  cudaEmulation: boolean;
  system: string;
}

export interface DeviceInfo {
  name: string;
  description: string;
  type: 'cpu' | 'gpu';
  memoryFree: number;
  memoryTotal: number;
}

// ---- Generation (sampling engine) ----

export interface SamplingOptions {
  /** 0 means greedy (argmax). Default 1.0. */
  temperature?: number;
  /** 0 disables. */
  topK?: number;
  /** 1 disables. */
  topP?: number;
  /** 0 disables. */
  minP?: number;
  /** 1 disables; applied to the last `repeatLastN` tokens of prompt + completion. */
  repeatPenalty?: number;
  repeatLastN?: number;
  /** Same seed, same requests, same options => same completions. */
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
  /** Generation of one sequence stops after the first occurrence of any of these strings (kept out of `text`). */
  stop?: string[];
  /** Extra stop token ids besides the model's end-of-generation tokens. */
  stopTokens?: number[];
  /** Called after every decode step with the number of tokens generated so far (all sequences). */
  onProgress?: (generatedTokens: number) => void;
  /**
   * Aborting ends the call after the current decode step: it rejects with GenerationStopped and
   * returns nothing of the batch. For a caller told to stop (Ctrl-C) that cannot wait out a
   * batch, which on a CPU can take minutes.
   */
  signal?: AbortSignal;
  /** Keep generating past end-of-generation tokens (benchmarks need fixed lengths). Default false. */
  ignoreEos?: boolean;
}

export interface GenerateRequest {
  /** Prompt tokens; prefilled once and shared by the `n` samples. */
  prompt: Int32Array | number[];
  /** Number of completions sampled from this prompt (a GRPO group). Default 1. */
  n?: number;
  /**
   * One non-empty continuation of the prompt per sample: sample j reads prompt + suffixes[j],
   * and the prompt is still prefilled once (n defaults to, and must equal, suffixes.length).
   * For prompts that share a long start, e.g. RRR's retries of one task.
   */
  suffixes?: (Int32Array | number[])[];
}

export interface Completion {
  /** Every sampled token, including the end-of-generation or stop token that ended it (not shown in `text`). */
  tokens: Int32Array;
  text: string;
  /** Log-probability of each generated token under the sampling distribution's model (before temperature). */
  logprobs: Float32Array;
  finishReason: 'eos' | 'stop' | 'length';
}

export interface GeneratorOptions {
  /** Sequences decoded together (Σ n over a batch of requests; larger workloads run in waves). */
  maxSeqs: number;
  /** Longest prompt + completion of one sequence. */
  nCtx: number;
  /**
   * Where a request needs more than nCtx cells a sequence, the cache is made again with what it
   * needs (in 256-cell tiles), up to maxCtx, before the call runs, instead of the call being
   * refused; info.nCtx says the size it has. For a cache sized to an estimate of the longest
   * request. Default: nCtx, no growing. Not with nCells.
   */
  maxCtx?: number;
  /**
   * KV cache cells of the unified layout. Default maxSeqs × nCtx, enough for any batch; prompts
   * shared by a group occupy their cells once, so a smaller cache often suffices (waves are
   * then packed to fit). Giving nCells picks the unified layout unless kvLayout says otherwise.
   * Each stream is rounded up to a multiple of 256 cells (as llama.cpp pads its context), which
   * GPU flash attention needs for its fast kernels; info.nCells reports the padded size.
   */
  nCells?: number;
  /**
   * How the KV cache is laid out. 'streams': one block of nCtx cells per sequence, each prompt
   * copied into every sample's block, and each decoded token reads only its own sequence's
   * cells (as llama.cpp's default cache). 'unified': one pool shared by all sequences, a prompt
   * stored once per group, and each decode step reads one window spanning every sequence,
   * masked per row. Default 'auto': streams, unless nCells is given or maxSeqs is 1.
   */
  kvLayout?: 'auto' | 'unified' | 'streams';
  /** Cache element type; default f16 (as llama.cpp). f32 gives exact comparisons. */
  kvType?: 'f16' | 'f32' | 'bf16';
  /**
   * ggml flash attention. Default: on for a GPU that has a kernel for the model's head size
   * (ggml-cuda has none for some, e.g. 16 or 32, and the op would run on the CPU), off on CPU.
   */
  flashAttn?: boolean;
  /**
   * Greedy and plain-temperature decode steps sample inside the graph and copy back only the
   * ids and log-probs (top-k/top-p/min-p and repetition penalty always sample on the host).
   * Default on for GPU backends, off on CPU, where the host sampler is the faster of the two.
   */
  deviceSampling?: boolean;
  /** Prompt tokens per prefill graph; default 512. */
  nUbatch?: number;
}

export interface GeneratorInfo {
  maxSeqs: number;
  nCtx: number;
  nCells: number;
  nUbatch: number;
  kvType: string;
  kvLayout: 'unified' | 'streams';
  /** Bytes of the K and V tensors of every layer. */
  kvBytes: number;
  flashAttn: boolean;
  deviceSampling: boolean;
  device: string;
}

/** Work and wall time of one generate() call (summed over its waves). */
export interface GenerateStats {
  waves: number;
  /** Prompt tokens evaluated: each shared prompt once. */
  prefillTokens: number;
  /** Graphs the prompts went through: prompts share one while they fit the prefill batch. */
  prefillSteps: number;
  /** Tokens evaluated by decode steps. */
  decodeTokens: number;
  /** Tokens sampled (≥ decodeTokens: the first token of each sample comes from the prefill). */
  generated: number;
  steps: number;
  prefillMs: number;
  /** Decode wall time, sampling included. */
  decodeMs: number;
  sampleMs: number;
  /** Pieces the scheduler cut the largest graph into: 1 when it all ran on the compute device. */
  graphSplits: number;
  /**
   * Distinct host input tensors (inputs, or views of them) the largest graph's kernels read: a
   * GPU's scheduler copies each to the device, and cuts the graph in two past 30. Counted on the
   * CPU too, so a graph a GPU would cut shows there.
   */
  graphHostInputs: number;
  /** Ops the compute device could not run, done by the CPU instead (empty on a CPU run). */
  fallbackOps: string[];
}

// ---- LoRA training ----

export type LoraTarget = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

export interface LoraConfig {
  rank: number;
  alpha: number;
  targets: LoraTarget[];
  /** Seed of A's random init (B starts at zero, so a new adapter leaves the model unchanged). */
  seed?: number;
  /**
   * LoRA dropout (PEFT's lora_dropout), in [0, 1); default 0, off. In the passes of step(),
   * gradients() and evaluate(), each adapter reads its input with this share of the values
   * zeroed and the rest scaled by 1 / (1 − dropout); logprobs() and generation see no dropout.
   * Masks change with every optimizer step and do not depend on how a batch is split into
   * micro-batches. Not stored in the adapter file; mergeAdapter cannot be combined with it.
   */
  dropout?: number;
}

/** How a Trainer keeps the model's frozen weights for the backward pass. */
export interface TrainerOptions {
  /**
   * The backward pass multiplies by each frozen weight transposed. 'cache' keeps a transposed
   * copy in device memory (the projections and LM head again; f16 for quantised bases), 'per-step'
   * transposes inside every step's graphs (no memory, a copy of the model per step), 'auto'
   * (default) transposes per step on a GPU (the copy bought 0.4% on an H200, for memory that keeps
   * layers' activations instead) and caches on the CPU when the copy takes at
   * most 25% of RAM.
   */
  transposedWeights?: 'auto' | 'cache' | 'per-step';
  /**
   * Attention outputs from ggml's flash attention in every training and log-prob pass, so no
   * [L, L] probabilities are written and read back where nothing needs them; only the backward
   * pass builds them. Default (undefined): on for a GPU with a kernel for the model's head size,
   * off on the CPU. true where the device has no kernel is refused. A trainer-wide setting, so
   * logprobs() and steps compute the same numbers (on a GPU the kernel rounds K and V to f16).
   */
  flashAttn?: boolean;
  /**
   * The attention backward as one node of our own instead of about twenty of ggml's ops: it
   * recomputes the probabilities itself (none kept or rebuilt beside it) and reads Q, K, V and the
   * output's gradient in place (no permuting copies). On the CPU its kernel is a plain loop; on a
   * GPU (CUDA builds) cuBLAS's batched products over a few sequences at a time, on a ggml backend
   * of our own that shares ggml-cuda's memory, with products in TF32 unless the model's weights
   * are f32. Default false: an H200 timed it only with our other nodes (README), and the GPU run
   * of their tests is not yet clean.
   */
  fusedAttnBackward?: boolean;
  /**
   * The fused attention backward's work space in MiB: the GPU's kernels go through as many
   * sequences at a time as it holds (at least one). Default: 256 on a GPU, 0 on the CPU, whose
   * kernel needs none; given one, the CPU takes the GPU's steps (the same products, strides and
   * layouts) in slow single-threaded loops, so that they can be checked without a GPU.
   */
  attnWorkspaceMiB?: number;
  /**
   * With fusedAttnBackward: its work space's products multiply f16 copies of Q, K, V and dO and
   * f16 probabilities and their gradient, with f32 sums (cuBLAS's tensor-core f16 products),
   * where they multiply f32 (TF32 on a GPU); the scores, dP and the gradients stay f32. 28 bytes
   * per [L, L] number instead of 40 (at the Qwen2.5-1.5B shape, 16 × 512 tokens in two
   * micro-batches: the node's census 53.2 instead of 74.9 GB). Needs a work space (a GPU's, or
   * attnWorkspaceMiB on the CPU, which then rounds as the GPU would); the CPU's own kernel
   * ignores it. Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean. (Since the steps take queries by blocks
   * and skip the ones the causal mask zeroes whole, 38.4 GB at that shape.)
   */
  fusedAttnF16?: boolean;
  /**
   * The SwiGLU's backward pass as one node of our own instead of three of ggml's ops (a MUL, a
   * SILU_BACK and a SWIGLU): one pass over the MLP's gate, up and their gradient where there were
   * three, 20 bytes a number instead of 36. On a GPU (CUDA builds) one elementwise kernel on the
   * same backend of ours as the attention's node. Where gate's and up's dx products multiply
   * 16-bit weights, the node also writes its gradients rounded to their type, so those products
   * convert nothing. With fusedMerge in a merged, recomputing step over 16-bit weights, the
   * forward's SwiGLU is a node of ours too, writing silu(gate)·up in the down product's type
   * where ggml's wrote f32 for the product to convert, and the next layer's merges join its run.
   * Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  fusedMlpBackward?: boolean;
  /**
   * Where a step merges the adapter into the weights (StepOptions.mergeAdapter; a GPU's default
   * with f16 weights): each W + s·B·A made by one node of our own, which sums the rank-r product
   * where it writes the merged weight, instead of three of ggml's ops (s·Aᵀ, an f32 delta the size
   * of W, an add): 4 bytes a weight instead of 12. A recomputed layer's node writes the transpose
   * for its backward pass at the same time, where ggml's ops took a transposing copy. f32, f16 and
   * bf16 weights (quantized ones keep ggml's ops). Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  fusedMerge?: boolean;
  /**
   * Where a step merges the adapter into the weights (and no dropout): each group of adapters
   * that read one input (q, k, v; gate, up; o; down) takes its gradients in two nodes of our own
   * instead of about a dozen of ggml's ops an adapter (s·Aᵀx, Bᵀdy, their scales, a transposing
   * copy, a concat, the two outer products), the same FLOPs. On a GPU their products are cuBLAS
   * calls in f32, placed in the runs of our other nodes. With fusedMlpBackward, down's adapter
   * reads silu(gate)·up from the SwiGLU node, which writes it beside its gradients, so no kept or
   * recomputed layer rebuilds the SwiGLU for it. At the Qwen2.5-1.5B shape, 16 x 512 tokens in
   * 16 GiB with our other nodes and bf16 merges: 5,368 ops and 430.3 GB planned a step instead
   * of 7,384 and 447.7. Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  fusedLoraBackward?: boolean;
  /**
   * With fusedLoraBackward and fusedMlpBackward, where a merged step's gate and up products
   * multiply 16-bit weights: the MLP's adapter gradients multiply 16-bit numbers, as PEFT's bf16
   * training does (f32 sums): gate's and up's the SwiGLU node's 16-bit copies of their output
   * gradients, down's a 16-bit silu(gate)·up, with A, B, s·Aᵀx and da rounded alike. The SwiGLU
   * node then writes 16 bits alone (6 bytes a number where it wrote 16), and the adapters read
   * half the bytes. At the Qwen2.5-1.5B shape in 16 GiB with every node and bf16 merges: 368.9
   * GB planned a step instead of 413.9. Default false: 16-bit precision in those gradients; an
   * H200 timed it only with our other nodes (README), and the GPU run of their tests is not yet
   * clean.
   */
  fusedLora16?: boolean;
  /**
   * Where a step (or log-prob pass) merges the adapter into the weights: merge f16 and quantized
   * weights into bf16 instead of f16 (f32 weights stay f32). ggml-cuda multiplies bf16 weights
   * with f32 sums and writes each f32 result directly, where its f16 products write f16 and
   * convert every result to f32 in a pass of its own: at the Qwen2.5-1.5B shape, 16 × 512 tokens,
   * a merged step's census (ggml-cuda's kernels) drops from 604.8 to 550.1 GB with our merge node
   * (fusedMerge), and from 628.5 only to 615.8 GB with ggml's ops, which merge into bf16 through
   * f32 (fusedMerge is the one to pair it with). bf16 keeps 8 bits of mantissa
   * (f16: 11), as a bf16 model and PEFT's bf16 training do, and GeForce cards sum such products
   * at half their f16 rate. Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  mergeBf16?: boolean;
  /**
   * The LM head and the loss's gradient at it as one node of our own instead of a dozen of
   * ggml's ops a chunk of loss rows (StepOptions.logitsChunkRows): per chunk one product writes
   * f32 logits, one pass per row reads them for its log-prob and writes its gradient at them
   * (the loss's coefficient times onehot − p) over them in the head's type, and one product
   * multiplies that by the head as stored, with no transposed copy of it. At the Qwen2.5-1.5B
   * shape in 16 GiB (16 x 512 tokens, every other node, bf16 merges, as a GPU runs it: 1,104-row
   * chunks, joined dx products, weights transposed each step): 368.9 -> 356.5 GB and 12,169 ->
   * 11,751 MiB of compute buffer planned a step. f32, f16 and bf16 heads (a quantized one is
   * refused). Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  fusedHead?: boolean;
  /**
   * With fusedHead: whether its node takes the GPU's steps (a work space for a chunk's logits).
   * Default: on a GPU, which needs them; off on the CPU, whose own loops take whole rows, where
   * true runs the GPU's steps in slow loops, to check them.
   */
  fusedHeadSteps?: boolean;
  /**
   * Each layer's two RMS norms' backward passes as nodes of our own: one pass a norm sums the
   * projections' dx terms, multiplies by the norm's weight, takes the norm's gradient and adds
   * the residual's, where ggml's ops (the terms' ADDs, MUL, RMS_NORM_BACK, ADD) each write a tensor
   * the next reads back: 16 bytes a number for one term instead of 32. At the Qwen2.5-1.5B shape
   * (16 x 512 tokens in two micro-batches, all 28 layers kept, every other node, bf16 merges,
   * joined dx products as a GPU joins them): 356.5 -> 342.6 GB and 5,210 -> 4,934 ops planned a
   * step. On a GPU each node is a run of ours between ggml-cuda's: 2 n_layer - 1 more a
   * micro-batch. Default false:
   * an H200 timed it only with our other nodes (README), and the GPU run of their tests is
   * not yet clean.
   */
  fusedNormBackward?: boolean;
  /**
   * The MLP's gate and up products written in 16 bits (their merged weights' type) by our node,
   * which both SwiGLU nodes read as they are: half the bytes to write them, to read them in the
   * SwiGLU's forward and backward, and to keep them (a kept layer's largest part), as PEFT's bf16
   * training keeps them. The sums stay f32; only the results are rounded. Merged steps with
   * fusedMlpBackward and fusedLoraBackward only (elsewhere ggml's products run, as without it).
   * At the Qwen2.5-1.5B shape (16 x 512 tokens within 16 GiB, every other node, bf16 merges,
   * ggml-cuda's kernels counted): 327.8 -> 303.1 GB a step planned in the same two
   * micro-batches, and a compute buffer of 7,831 MiB instead of 11,751; in one micro-batch (22 of
   * 28 layers kept) 295.2 GB in 2,575 ops instead of 4,934, with 6% more FLOPs.
   * Default false: an H200 timed it only with our other nodes (README), and the GPU run of
   * their tests is not yet clean.
   */
  gateUp16?: boolean;
  /**
   * With gateUp16: the gradient at the MLP's SwiGLU (down's dx product) written in 16 bits by our
   * node too, and read so by the SwiGLU's backward node: 4 bytes a number fewer to write and read
   * back (8 where ggml-cuda's f16 product wrote f16 and converted it). At the Qwen2.5-1.5B shape
   * as for gateUp16: 303.1 -> 294.9 GB planned in two micro-batches, 287.0 in one; no more runs
   * of ours. Default false: an H200 timed it only with our other nodes (README), and the GPU
   * run of their tests is not yet clean.
   */
  swigluGrad16?: boolean;
  /**
   * On a GPU with any of our nodes, where each run of them and the runs of ggml-cuda's ops
   * around it wait for each other. 'host': each run of ours is a piece of the ggml scheduler's,
   * which waits on the host before the next backend's piece, so the GPU runs dry twice a run
   * (143 runs a micro-batch at the Qwen2.5-1.5B shape with every node on). 'device': our backend
   * fronts ggml-cuda, taking the graph in one piece and handing the runs of ggml's ops to
   * ggml-cuda as views of it; the two CUDA streams wait for each other by events, and the host
   * queues the next run while the GPU works (an H200: 268 against 328 ms a step at that shape).
   * Default 'host' until the GPU tests have compared its numbers with 'host''s; refused without
   * a GPU or without a node of ours.
   */
  nodeWaits?: 'host' | 'device';
}

export interface OptimizerConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm clip; 0 disables. */
  gradClip?: number;
}

export interface TrainSequence {
  tokens: Int32Array;
  /**
   * weights[t] multiplies the log-prob term of token t (predicted from position t-1);
   * weights[0] is ignored. RRR puts the advantage on reflection tokens and 0 elsewhere.
   */
  weights: Float32Array;
  /** Log-probs of the same tokens under the sampling policy, for the clipped ratio; omitted => ratio 1. */
  oldLogprobs?: Float32Array;
  /**
   * m[t] (0/1): which tokens are trained and counted in the normaliser Σm and the KL. Omitted =>
   * m[t] = (weights[t] !== 0). Give it when some trained tokens may carry a zero advantage.
   */
  mask?: Uint8Array;
}

export interface StepOptions {
  /** Learning rate for this step (from the schedule). */
  lr: number;
  /** PPO clip epsilon. */
  clipEps?: number;
  /** KL(pi || pi_ref) coefficient; pi_ref is the base model (adapter off). */
  beta?: number;
  /** Split the batch into micro-batches of at most this many tokens and accumulate gradients. */
  microBatchTokens?: number;
  /** Recompute each layer's activations in the backward pass instead of keeping them (default true). */
  recompute?: boolean;
  /**
   * With recompute: the top keptLayers layers keep their costly activations (about half of each
   * layer's) and rebuild only the cheap rest (default 0): faster, more memory. Trainer.plan says
   * how much; more than the model's layers keeps them all. 'auto' (with memoryBudget) keeps as
   * many as fit.
   */
  keptLayers?: number | 'auto';
  /**
   * Bytes the step's compute buffer may take (0 or omitted: no limit). The step plans its graphs
   * first and, where they would need more, splits the batch into smaller micro-batches than
   * microBatchTokens (gradients are accumulated, so the result is the same); with keptLayers
   * 'auto' it then keeps as many layers as still fit. A step that cannot fit even one sequence
   * per micro-batch fails with an error saying how much it needs. Not counted: the model's
   * weights, the adapter and its optimizer state, kept transposed weights.
   */
  memoryBudget?: number;
  /**
   * With keptLayers 'auto', where not every layer fits: also weigh splitting the batch into more
   * micro-batches than memoryBudget needs (whole sequences). Smaller micro-batches hold smaller
   * activations, so more layers keep theirs and skip recomputation, while each micro-batch more
   * reads the weights (and merges the adapter) again. The step plans each split, counts its work
   * (the census: product FLOPs, bytes moved) at the device's rates and takes the least, trying
   * splits in order until one keeps every layer. The answer is reused while batches keep the
   * same shape; StepResult.microBatches and keptLayers say what a step did. Gradients are the
   * same either way (accumulated). Default true; false keeps the fewest micro-batches that fit.
   * At the Qwen2.5-1.5B shape, 16 × 512 tokens in 16 GiB on a GPU (merged, flash attention), it
   * plans 2 micro-batches with all 28 layers kept instead of 1 with 13.
   */
  keptSplit?: boolean;
  /**
   * Loss rows per LM-head chunk (default: about 32M logits per chunk on the CPU, 160M on a GPU);
   * raised where a pass would have more than 128 chunks, which ggml's allocator cannot hold.
   */
  logitsChunkRows?: number;
  /**
   * Multiply each adapted projection by W + s·B·A, merged in the step's graph (per layer, pass
   * and step), instead of adding B·(s·A·x) to W·x. The merge touches the weight's n_in × n_out
   * numbers once; the adapter path reads and writes n_out × tokens activations several times, so
   * merging moves fewer bytes once a micro-batch has more tokens than about
   * n_in·n_out / (n_in + n_out) (≈1,300 for a Qwen2.5-1.5B MLP projection). The merged weight
   * is rounded to the weight's type (f16 for quantized bases), so with f16 weights an adapter's
   * change below the weight's rounding step is lost from the forward pass (as fine as the f16
   * input such a product rounds x to); its gradient is not. Default (undefined): on a GPU where
   * every adapted weight is f16, the adapter has no dropout and fuseAdapter is not given (an
   * H200, Qwen2.5-1.5B shape, 16 × 512 tokens: 17,463 tok/s merged against 16,358 fused);
   * otherwise off. StepResult.adapterMerged says what a step did.
   */
  mergeAdapter?: boolean;
  /**
   * Without mergeAdapter: sum each adapter's B·(s·A·x) inside its frozen weight's product, as
   * [W | B]·[x ; s·A·x], instead of writing it n_out × tokens in f32 and adding it. W stays exact;
   * B and s·A·x enter the product in the weight's type (f32, f16, bf16; quantized bases keep the
   * adapter path). 'bytes': wherever it moves fewer bytes, i.e. where a micro-batch has enough
   * tokens that the adapter's activations outweigh a copy of the weight (at 16 × 512 tokens on a
   * Qwen2.5-1.5B shape: q/k/v, o, gate/up; not down). true: every adapted projection the weights'
   * type allows; false: never. Default (undefined): 'bytes' on a GPU; false on the CPU, whose
   * steps are bound by their products (it measured 2% slower there). In the backward pass it
   * also takes the dx of projections that share an input (q, k, v; gate, up) from one product,
   * [W_qᵀ | W_kᵀ | W_vᵀ]·[dy_q ; dy_k ; dy_v], where that moves fewer bytes ('bytes') or always
   * (true), merged or not: with mergeAdapter that is all it does, and a GPU's default step is
   * merged with 'bytes'.
   */
  fuseAdapter?: boolean | 'bytes';
  /**
   * Layers that keep their activations for the backward pass (keptLayers, or all of them with
   * recompute off) store the MLP's gate and up products in f16 instead of f32 and widen them
   * again for the backward pass: 78% of the numbers such a layer keeps, so it takes 61% of the
   * bytes (Qwen2.5-1.5B shape) and a memoryBudget keeps more layers. Where ggml-cuda's f16
   * products wrote them (f16 weights, the adapter merged or fused) they are f16 numbers already
   * and nothing is rounded; on the CPU, whose products sum in f32, they are rounded as the down
   * product rounds its input anyway. Default false: on a GPU the casts to f16 and back likely
   * cost more than recomputing the layer (an H200's profile ran ggml-cuda's casts at 0.5 to
   * 0.6 TB/s: about 3 ms a kept Qwen2.5-1.5B layer at 16 × 512 tokens, against about 2.3 ms to
   * recompute one), so this trades time for memory.
   */
  keptF16?: boolean;
  /**
   * Kept layers (keptLayers, memoryBudget) keep their two RMS norms' outputs too (f32, n_embd
   * numbers a token each), which the adapters' gradients read, where the backward pass rebuilds
   * them: the same numbers, two norms fewer a kept layer. At the Qwen2.5-1.5B shape (16 x 512
   * tokens in 16 GiB, every node of ours, gate and up and the SwiGLU's gradient in 16 bits) the
   * census drops 224 ops and 11.3 GB a step (counted as ggml's ops: ggml-cuda fuses each norm's
   * RMS_NORM and MUL into one pass, so about half that) for 48 MiB more a kept layer in each
   * micro-batch. Default false: an H200 took 318 against 328 ms a step with it (every node of
   * ours, 16 GiB), but its tests have not run on a GPU.
   */
  keptNorms?: boolean;
  /**
   * Time every op of this step (StepResult.profile). Each op then runs and waits on its own, so
   * the step is slower: for finding where time goes, not for measuring speed.
   */
  profile?: boolean;
}

/** Compute-buffer bytes of a step's training pass (Trainer.plan), planned without running it. */
export interface MemoryPlan {
  /** On the model's device: the GPU's, or host memory when the model runs on the CPU. */
  deviceBytes: number;
  /** Host memory for ops a GPU could not run (0 without a GPU). */
  cpuBytes: number;
  /** As the step would settle them within memoryBudget (StepOptions): tokens per micro-batch (0: all at once), */
  microBatchTokens: number;
  /** kept layers, */
  keptLayers: number;
  /** and the number of micro-batches. */
  microBatches: number;
  /** Whether the step would merge the adapter into the weights (StepOptions.mergeAdapter, settled). */
  adapterMerged: boolean;
  /** StepOptions.fuseAdapter as the step would settle it (merged, it joins only the backward dx products). */
  fuseAdapter: boolean | 'bytes';
  /**
   * The planned step's work (its census on the device's kernels: product FLOPs and bytes moved)
   * at the device's rates, in ms: what StepOptions.keptSplit compares between splits. A relative
   * cost, fitted to one machine of each kind. GPU: 620 TFLOP/s, 2.7 TB/s, 16 µs an op and 180 µs
   * each run of our nodes waited for on the host (TrainerOptions.nodeWaits 'host'), fitted to an
   * H200's timed steps within 4.3 ms rms; CPU: 150 GFLOP/s and 6 GB/s (a 2-core machine's).
   */
  estimatedMs: number;
  /** With PlanOptions.census: the training passes' ops over all micro-batches, most bytes first. */
  census?: OpCensus[];
  /**
   * With PlanOptions.census: runs of our own nodes in the passes' graph order, summed over the
   * micro-batches (StepResult.graphCustomRuns counts the largest pass's). The GPU's estimate
   * prices each at a host wait unless TrainerOptions.nodeWaits is 'device'.
   */
  censusCustomRuns?: number;
  /** With PlanOptions.census: whose kernels it counted for (PlanOptions.censusKernels, settled). */
  censusKernels?: 'graph' | 'cuda';
}

/** Trainer.plan's options: a step's, and whether to count the graph's work. */
export interface PlanOptions extends Omit<StepOptions, 'lr' | 'profile'> {
  /**
   * Count the work of every op of the planned graphs (MemoryPlan.census): a cost model that needs
   * no device, to set beside a profile (StepOptions.profile), which times the same (op, role) keys.
   */
  census?: boolean;
  /**
   * Whose kernels the census counts bytes for (default: the trainer's device's). 'graph': the ops
   * as the graph writes them. 'cuda': as ggml-cuda runs them, with the conversions it makes inside
   * an op as entries of their own, in its role: "CONVERT f32 to f16 (cuBLAS src1)" (a 16-bit
   * product's f32 input; src0 likewise), "CONVERT f16 to f32 (cuBLAS result)" (f16 products write
   * f16), "QUANTIZE f32 to q8_1 (MMQ input)", "CONVERT f32 to f16 (flash-attn K)" and V. The
   * product then counts what it reads in the converted type. A GPU's step can so be counted on the
   * CPU. Honours GGML_CUDA_CUBLAS_COMPUTE_TYPE as ggml-cuda does.
   */
  censusKernels?: 'graph' | 'cuda';
}

/**
 * The work one kind of op does in one role of a planned step (PlanOptions.census). Nothing is
 * run: the figures come from the tensors' shapes.
 */
export interface OpCensus {
  /** As OpTime.op. */
  op: string;
  /** As OpTime.role. */
  role: string;
  count: number;
  /**
   * Bytes of every operand and result, counted once per op (views and reshapes move nothing and
   * are left out), in the types the kernels read them (PlanOptions.censusKernels).
   */
  bytes: number;
  /** 2 × multiply-adds of MUL_MAT, OUT_PROD and FLASH_ATTN_EXT (its two products); 0 for other ops. */
  flops: number;
}

/** Wall time of one kind of op, in one role, in a profiled step (StepOptions.profile). */
export interface OpTime {
  /** ggml op name; matmuls add their operand types, e.g. "MUL_MAT f16 x f32". */
  op: string;
  /**
   * What the op was for: "<phase>.<part>". Phases: fwd (forward), re (a layer recomputed in the
   * backward pass), bwd (backward), lp (a log-prob pass, e.g. the base model's for the KL), head
   * (LM head and loss), adamw. Parts: W (frozen-weight products and their input sums), Wt (frozen
   * weights transposed in the step), lora, attn, mlp (SwiGLU), norm, resid, embed, loss, lp, norm
   * and step (AdamW). "other" for an op no builder named.
   */
  role: string;
  count: number;
  ms: number;
}

export interface StepResult {
  /** See Trainer: −Σ min(ρA, clip(ρ)A)/N + β·KL, or −Σ w·logπ/N + β·KL without oldLogprobs. */
  loss: number;
  /** Mean k3 estimate of KL(π‖π_ref) over trained tokens (0 when β = 0). */
  kl: number;
  /** Global gradient L2 norm before clipping. */
  gradNorm: number;
  /** Mean π/π_old over trained tokens (1 without oldLogprobs). */
  meanRatio: number;
  /** Tokens run through the training graphs (unpadded). */
  tokens: number;
  ms: number;
  /**
   * Of ms: the host building the passes' graphs, placing them on the backends and planning their
   * memory, before each ran (the optimizer's small graphs not counted). A GPU waits through it.
   */
  graphMs: number;
  /** Mean log π of the trained tokens at the parameters before the update. */
  meanLogprob: number;
  /** Fraction of trained tokens whose ratio was clipped. */
  clipFraction: number;
  /**
   * The power of two the backward pass multiplied the loss by, so that per-token gradients stay
   * in f16's range where 16-bit weights round them (divided out before gradNorm). Where that
   * overflowed, the smaller one (below 1 if need be) the pass ran again with; 1 without a
   * backward pass.
   */
  lossScale: number;
  /** N = Σ m: trained tokens in the batch, the loss normaliser. */
  lossTokens: number;
  /** True when N = 0: nothing was trained and the optimizer did not step. */
  skipped: boolean;
  /**
   * Bytes of the trainer's compute buffer on the model's device after this step. It is kept
   * between steps and grows to the largest step's need (Trainer.plan foretells it); 0 when skipped
   * before any step ran.
   */
  computeBytes: number;
  /** Micro-batches the batch ran in, and the tokens per micro-batch settled (0: all at once; see memoryBudget). */
  microBatches: number;
  microBatchTokens: number;
  /** Layers that kept their activations (all of them with recompute off). */
  keptLayers: number;
  /** Whether the adapter was merged into the weights (StepOptions.mergeAdapter, settled). */
  adapterMerged: boolean;
  /** As in GenerateStats: the step's graphs (passes, gradient norm, AdamW update). */
  graphSplits: number;
  graphHostInputs: number;
  /**
   * Runs of our own nodes (fused attention and SwiGLU backward, merges, ...) in the largest pass's
   * graph order: on a GPU each hands our CUDA stream the work and back, two waits on the host
   * or on the device (TrainerOptions.nodeWaits). Counted on the CPU too.
   */
  graphCustomRuns: number;
  fallbackOps: string[];
  /** With StepOptions.profile: time per (op kind, role), slowest first. */
  profile?: OpTime[];
}

export interface TrainerInfo {
  rank: number;
  alpha: number;
  /** LoraConfig.dropout (0 for a trainer made from an adapter file). */
  dropout: number;
  targets: LoraTarget[];
  /** Trainable parameters (elements of all A and B tensors). */
  nParams: number;
  /** Optimizer steps taken (restored by loadState). */
  steps: number;
  /** Device bytes of the transposed frozen weights kept (TrainerOptions); 0 when transposed per step. */
  transposedWeightsBytes: number;
  /** Whether the passes use flash attention (TrainerOptions.flashAttn, settled). */
  flashAttn: boolean;
  /** Whether the backward passes use the fused attention node (TrainerOptions.fusedAttnBackward). */
  fusedAttnBackward: boolean;
  /** Whether the backward passes use the fused SwiGLU node (TrainerOptions.fusedMlpBackward). */
  fusedMlpBackward: boolean;
  /** Whether merged steps merge with our node (TrainerOptions.fusedMerge). */
  fusedMerge: boolean;
  /** Whether merged steps take the adapters' gradients in our nodes (TrainerOptions.fusedLoraBackward). */
  fusedLoraBackward: boolean;
  /** Whether the MLP's adapter gradients multiply 16-bit numbers (TrainerOptions.fusedLora16). */
  fusedLora16: boolean;
  /** Whether merges of 16-bit and quantized weights go into bf16 (TrainerOptions.mergeBf16). */
  mergeBf16: boolean;
  /** Whether the fused attention backward multiplies f16 copies (TrainerOptions.fusedAttnF16). */
  fusedAttnF16: boolean;
  /** Whether the LM head and the loss's gradient at it are our node (TrainerOptions.fusedHead). */
  fusedHead: boolean;
  /** Whether the layers' norms take their backward pass in our nodes (TrainerOptions.fusedNormBackward). */
  fusedNormBackward: boolean;
  /** Whether the MLP's gate and up products write 16 bits (TrainerOptions.gateUp16). */
  gateUp16: boolean;
  /** Whether the gradient at the MLP's SwiGLU is written in 16 bits (TrainerOptions.swigluGrad16). */
  swigluGrad16: boolean;
  /** Where a GPU's runs of our nodes and of ggml-cuda's ops wait for each other (TrainerOptions.nodeWaits, settled; 'host' without them). */
  nodeWaits: 'host' | 'device';
}

export interface GradientsResult extends StepResult {
  /** dLoss/dθ per adapter tensor, named like the GGUF ("blk.0.attn_q.weight.lora_a"). */
  grads: Record<string, Float32Array>;
}

export interface ReferenceOptions {
  gpu?: boolean;
  nCtx?: number;
  threads?: number;
  /** f32 KV cache (default) so comparisons are not blurred by llama.cpp's f16 cache. */
  f32Kv?: boolean;
  flashAttn?: boolean;
  /** llama.cpp's repacked CPU weight layouts (default on); off => the same kernels as our engine. */
  repack?: boolean;
}

export interface ReferenceDecoderOptions {
  gpu?: boolean;
  threads?: number;
  /** f32 KV cache (llama.cpp's default is f16). */
  f32Kv?: boolean;
  flashAttn?: boolean;
  nUbatch?: number;
  /**
   * true (default): one KV cell pool, a group's prompt cells shared by its sequences. false:
   * one stream per sequence, the prompt copied into each (llama-batched-bench's default, so
   * each sequence's attention covers only its own cells).
   */
  kvUnified?: boolean;
}

export interface ReferenceGreedyResult {
  /** [request][sample] -> generated tokens. */
  tokens: Int32Array[][];
  stats: { prefillTokens: number; decodeTokens: number; generated: number; prefillMs: number; decodeMs: number };
  /** KV cells libllama allocated for the workload, and their bytes. */
  nCells: number;
  kvBytes: number;
}

/** export --merge: base + adapter into one GGUF (mergeAdapter). */
export interface MergeOptions {
  model: string;
  adapter: string;
  out: string;
  /**
   * Type of the merged projections: 'base' (default) keeps each one's own type, re-quantizing a
   * quantized base, which rounds off part of the adapter (on 4-bit types much of it); 'f16',
   * 'bf16' or 'f32' store them so, exact to that precision, in a larger file.
   */
  mergedType?: 'base' | 'f16' | 'bf16' | 'f32';
}

export interface MergeResult {
  /** Projections that received the adapter. */
  merged: number;
  /** Of those, stored as f16 because their type needs an importance matrix (IQ*). */
  storedAsF16: number;
  /** Of those, stored in a quantized type; `quantizedType` is the one of fewest bits. */
  quantized: number;
  quantizedType?: string;
  bytes: number;
}

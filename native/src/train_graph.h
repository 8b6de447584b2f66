// The training graphs over one micro-batch: the model with LoRA, run on B sequences padded to a
// common length L ([n_embd, L*B] activations, per-sequence causal attention, so no T×T mask),
// the log-prob of each loss row's target computed in chunks of rows, and a hand-written backward
// pass into the LoRA tensors only.
//
// Why a hand-written backward instead of ggml_build_backward_expand: ggml's automatic gradient of
// mul_mat(W, x) with respect to x is out_prod(W, dyᵀ), which ggml's CUDA backend runs only for
// f32 W, so f16/bf16/quantized bases would fall back to the CPU. Here dx = Wᵀ dy is a mul_mat of
// a transposed copy of W (dequantised to f16 through get_rows for quantized types), which every
// backend runs. It also gives activation recomputation per layer and chunked loss rows.
#pragma once
#include <memory>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "adapter.h"
#include "backend.h"
#include "op_profile.h"
#include "weights.h"

namespace rrr {

// One micro-batch as the graphs see it. Row r of the loss is position rows[r] = b*L + p of the
// padded batch, predicting targets[r] = tokens of sequence b at p+1.
struct MicroBatch {
    int64_t L = 0, B = 0;
    std::vector<int32_t> tokens;    // B*L, padded with token 0
    std::vector<int32_t> positions; // B*L
    std::vector<int32_t> rows;
    std::vector<int32_t> targets;
    // Per-row loss inputs (see train_step.h for the loss they define):
    // Both times the batch's loss scale (train_step.cpp's loss_scale()), which the gradients
    // accumulated from them carry until divided by it:
    std::vector<float> neg_w;       // -w / N
    std::vector<float> kl_m;        // beta * m / N
    float loss_scale = 1.0f;
    std::vector<float> old_lp;      // behaviour-policy log-probs (when has_old)
    std::vector<float> ref_lp;      // base-model log-probs (when kl)
    // Host-side, for the reported loss and for mapping rows back to sequences:
    std::vector<float> w;           // advantage weight of each row
    std::vector<int32_t> seq_index; // batch index of each of the B sequences
    int64_t real_tokens = 0;        // tokens before padding
};

struct LossSpec {
    bool has_old = false;
    bool kl = false;
    float clip_eps = 0.2f;
};

class TransposedWeights;

struct GraphOptions {
    bool recompute = true;     // keep only each layer's input; rebuild the layer in the backward pass
    // With recompute, the top kept_layers layers keep their activations instead: their backward
    // comes first, so what they hold is freed before any recomputed layer needs room.
    int64_t kept_layers = 0;
    int64_t chunk_rows = 0;    // loss rows per LM-head chunk; 0 picks ~32M logits per chunk
    // Multiply by W + s B A, merged in the graph per projection and pass, instead of adding
    // B (s A x) to W x: the merge touches the weight's n_in x n_out numbers, the adapter path
    // reads and writes activations of n_out x tokens several times, so merging moves fewer bytes
    // once a micro-batch has more tokens than about n_in n_out / (n_in + n_out). The merged
    // weight is rounded to the weight's type (f16 for quantized bases). 1: merge, 0: not, -1: the
    // trainer's default (Trainer::graph_options).
    int merge_adapter = -1;
    // Without merging: sum each adapter's B (s A x) inside its weight's product, [W | B] [x ; s A x],
    // instead of writing it n_out wide and adding it. W stays exact; B and s A x enter the
    // product in W's type (f32, f16, bf16; quantized weights keep the adapter path). 2: where it
    // moves fewer bytes (the micro-batch's tokens against the weights' size), 1: always, 0: never,
    // -1: the trainer's default (2 on a GPU, 0 on the CPU). In the backward pass it also joins the
    // dx products of projections that share an input into one, merged or not (projs_back), so
    // with merge_adapter it says only that: a GPU's default step merges with 2.
    int fuse_adapter = -1;
    // LoRA dropout (PEFT's lora_dropout): each adapter reads its input with a share `dropout` of
    // the values zeroed and the rest scaled by 1 / (1 - dropout). The masks are a function of
    // dropout_seed, the layer and projection, the sequence's index in the step's batch and the
    // position, so recomputation, kept layers and any split into micro-batches see the same ones.
    float dropout = 0.0f;
    uint64_t dropout_seed = 0;
    // Attention outputs from ggml_flash_attn_ext, in every pass: no [L, L] probabilities written
    // and read back where nothing needs them (the forward pass, log-prob passes, the output of a
    // recomputed layer). Only the backward pass builds the probabilities, from the kept rotated
    // queries and keys. Set by the trainer (TrainerSettings::flash_attn), not per step, so that
    // log-probs and steps agree.
    bool flash_attn = false;
    // Layers that keep their activations for the backward pass (kept_layers, or every layer
    // without recompute) store the MLP's gate and up products in f16: 17,920 of the 23,040
    // numbers per token a Qwen2.5-1.5B kept layer holds, so it keeps 61% of the bytes (69% as
    // planned: 496 against 722 MiB a layer at 16 x 512 tokens). The backward pass widens them to
    // f32 again. Where ggml-cuda's f16 products wrote them (f16 weights, the adapter merged or
    // fused) they are f16 numbers already and nothing is rounded; elsewhere they are rounded as
    // the down product rounds its input. Off unless asked: the four casts a kept layer then
    // pays are ggml-cuda's CPY, which an H200's profile ran at 0.5 to 0.6 TB/s (about 3 ms a
    // layer at that shape), likely more than recomputing the layer costs (about 2.3 ms).
    bool kept_f16 = false;
    // Kept layers keep their two norms' outputs as well (f32 [n_embd, T] each: for Qwen2.5-1.5B
    // at 4,096 tokens 48 MiB a layer) for the adapters' gradients, where the backward pass
    // rebuilds them (RMS_NORM and MUL twice a layer, same ops and numbers). Off unless asked:
    // an H200 took 318 against 328 ms a step with it (every node of ours, 16 GiB), but its tests
    // have not run on a GPU.
    bool kept_norms = false;
    // Projections that read the same f32 input through 16-bit weights (q, k and v; gate and up)
    // read it cast once to that type, where each product would convert it itself: ggml-cpu
    // converts in every product, so once is less work. ggml-cuda's products convert with a fast
    // kernel (256 threads a block), while a cast is its CPY (64), which an H200's profile ran at
    // 0.58 TB/s where 256-thread elementwise kernels ran at 2.4: by those rates three
    // conversions inside the products take less time than the one cast (not yet timed). Set by
    // the trainer: on a GPU, off.
    bool share_input_cast = true;
    // The attention backward as one node of our own (attn_backward.h) instead of ggml's ops:
    // no [L, L] probabilities kept or rebuilt for it, no permuting copies. Set by the trainer
    // (TrainerSettings::fused_attn_backward), which also gives a GPU's node its work space
    // (attn_scratch_bytes) and says whether its products may round to TF32 (attn_tf32).
    bool fused_attn_backward = false;
    size_t attn_scratch_bytes = 0;
    bool attn_tf32 = false;
    // Its work space's products on f16 copies (AttnBackwardArgs::half). Set by the trainer
    // (TrainerSettings::fused_attn_f16).
    bool attn_half = false;
    // The SwiGLU's backward pass as one node of our own (swiglu_backward.h) instead of three of
    // ggml's ops: one pass over the MLP's gate, up and their gradient where there were three.
    // Set by the trainer (TrainerSettings::fused_mlp_backward).
    bool fused_mlp_backward = false;
    // With merge_adapter: each adapted projection's W + s·B·A made by a node of our own
    // (lora_merge.h) instead of ggml's three ops, and on a recomputed layer its transpose for the
    // backward pass with it; a layer's merges sit together at its start. Set by the trainer
    // (TrainerSettings::fused_merge).
    bool fused_merge = false;
    // With merge_adapter, no dropout: each group of adapters that read one x takes its gradients
    // in two nodes of our own (lora_backward.h) instead of about a dozen of ggml's ops an
    // adapter, placed beside our other nodes so that on a GPU they add no runs of their own. Set
    // by the trainer (TrainerSettings::fused_lora_backward).
    bool fused_lora_backward = false;
    // With fused_lora_backward and fused_mlp_backward, where gate's and up's dx products multiply
    // 16-bit weights: the MLP's adapter gradients multiply 16-bit numbers (f32 sums): gate's and
    // up's the SwiGLU node's copies of their output gradients, down's its silu(g)·u rounded alike,
    // so the node writes 16 bits alone. Set by the trainer (TrainerSettings::fused_lora_16).
    bool fused_lora_16 = false;
    // With merge_adapter: 16-bit and quantized weights are merged into bf16 instead of their own
    // type (f16 for quantized ones). ggml-cuda multiplies bf16 weights with f32 sums and writes
    // the f32 result directly, where its f16 products write f16 and convert every result to f32
    // after (6 bytes a number more; at the Qwen2.5-1.5B shape, 16 x 512 tokens, 82 GB of a
    // 629 GB step planned). bf16 keeps 8 bits of mantissa to f16's 11, and GeForce cards multiply
    // with f32 sums at half their f16 rate. Set by the trainer (TrainerSettings::merge_bf16).
    bool merge_bf16 = false;
    // The LM head and the loss's gradient at it as one node of our own (loss_head.h) instead of
    // a dozen of ggml's ops a chunk of rows. With head_steps it takes a GPU's steps in a work
    // space of a chunk's logits (a GPU's node needs them; the CPU's runs them in slow loops that
    // check them). Set by the trainer (TrainerSettings::fused_head, fused_head_steps).
    bool fused_head = false;
    bool head_steps = false;
    // Each layer's two RMS norms' backward passes as nodes of our own (norm_backward.h), which
    // also sum the projections' dx terms and add the residual's gradient. Set by the trainer
    // (TrainerSettings::fused_norm_backward).
    bool fused_norm_backward = false;
    // The MLP's gate and up products written in their merged weights' 16-bit type by our node
    // (product16.h), which the SwiGLU's nodes read as they are: merged steps with the fused MLP
    // backward and the adapters' gradient nodes only. Set by the trainer (TrainerSettings::gate_up_16).
    bool gate_up_16 = false;
    // With gate_up_16: the gradient at the SwiGLU (down's dx product) written in 16 bits by our
    // node too, which the SwiGLU's backward node reads so. Set by the trainer (TrainerSettings::swiglu_grad_16).
    bool swiglu_grad_16 = false;
    const TransposedWeights * transposed = nullptr; // Wᵀ kept by the trainer; nullptr: transposed in each graph
};

// Log-probs of each row's target under the model with `lora` (disabled view = the base model).
// Both passes merge where their graph ran into `placed`, and add the host's time building,
// placing and planning their graph (a GPU waits through it) into `host_ms`, when given.
std::vector<float> compute_logprobs(const ModelWeights & w, const LoraView & lora, ggml_backend_sched_t sched, const MicroBatch & mb,
                                    const GraphOptions & opt, Placement * placed = nullptr, double * host_ms = nullptr);

// A training pass's graph kept for the step's next micro-batch (accumulate_gradients).
struct TrainingPassCache;
struct TrainingPassCacheDeleter {
    void operator()(TrainingPassCache * c) const;
};
using TrainingPassCachePtr = std::unique_ptr<TrainingPassCache, TrainingPassCacheDeleter>;
TrainingPassCachePtr new_training_pass_cache();

// The gradient buffers a training pass adds into: one a parameter (same order as
// adapter.params()), and one tensor over all of them (the optimizer's flat gradients, where
// neighbours' sums may be written as one; may be null).
struct GradBuffers {
    const std::vector<ggml_tensor *> & each;
    ggml_tensor * whole = nullptr;
};

// Forward + backward of the micro-batch's loss; adds dLoss/dθ into `grads` and returns the rows' log-probs. With `cache`, the graph and the
// scheduler's allocation of it stay after the pass, and the next micro-batch of the same shape
// (positions, sequences, loss rows, with the same loss and options) runs them again with its own
// inputs, without building, placing and planning a graph (a GPU waits through that). The caller
// resets the scheduler before it runs another graph on it.
std::vector<float> accumulate_gradients(const ModelWeights & w, const Adapter & adapter, const GradBuffers & grads,
                                        ggml_backend_sched_t sched, const MicroBatch & mb, const LossSpec & loss, const GraphOptions & opt,
                                        Placement * placed = nullptr, double * host_ms = nullptr, TrainingPassCache * cache = nullptr);

// Bytes the training pass over `mb` needs in each of the scheduler's backends' compute buffers
// (in the scheduler's backend order), found by planning its graph: nothing is run or allocated.
// Adds the graph's op census (op_profile.h) into `census` when given.
std::vector<size_t> training_pass_bytes(const ModelWeights & w, const Adapter & adapter, const GradBuffers & grads,
                                        ggml_backend_sched_t sched, int n_backends, const MicroBatch & mb, const LossSpec & loss,
                                        const GraphOptions & opt, Census * census = nullptr);

// Graph nodes the passes above may need for a micro-batch with `rows` loss rows (to size the scheduler).
size_t train_graph_nodes(const ModelConfig & c, const GraphOptions & opt, int64_t rows);

} // namespace rrr

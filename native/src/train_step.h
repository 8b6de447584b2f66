// One LoRA training step over a batch of token sequences: micro-batching, the base-model pass
// for the KL term, gradient accumulation, clipping and AdamW.
//
// The loss (DESIGN.md, step 4). For sequence i and token t >= 1 (predicted from position t-1):
//   w_t   = TrainSequence.weights[t]            (A_i * m_t: the advantage on trained tokens)
//   m_t   = mask[t] != 0 when a mask is given, else w_t != 0
//   N     = sum of m_t over the whole batch (all micro-batches)
//   lp_t  = log pi(token_t | prefix) with the adapter, ref_t the same with the adapter off
//   rho_t = exp(lp_t - old_t)                   when oldLogprobs are given
//   KL    = sum m_t * (exp(ref_t - lp_t) - (ref_t - lp_t) - 1) / N   (k3 estimator, >= 0)
//   with oldLogprobs:    loss = -sum min(rho_t w_t, clip(rho_t, 1-eps, 1+eps) w_t) / N + beta * KL
//   without oldLogprobs: loss = -sum w_t lp_t / N + beta * KL
// The two agree in gradient when old == lp (rho = 1): the second is the plain policy gradient,
// written with lp instead of rho so that its value moves with the parameters. Tokens with m_t = 0
// do not enter the graph's LM head at all. A batch with N = 0 is no step: the adapter, the
// optimizer moments and the step count stay as they were.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adamw.h"
#include "adapter.h"
#include "model_core.h"
#include "op_profile.h"
#include "transposed_weights.h"
#include "train_graph.h"

namespace rrr {

struct TrainSeq {
    std::vector<int32_t> tokens;
    std::vector<float> weights;
    std::vector<uint8_t> mask;     // empty: m = (w != 0)
    std::vector<float> old_lp;     // empty: no ratio
};

// Whether the trainer keeps a transposed copy of the frozen weights (transposed_weights.h).
// Auto: on a GPU, when the copy takes at most 40% of the device's free memory; on the CPU, at most 25% of RAM.
enum class TransposedMode { Auto, Cache, PerStep };
TransposedMode parse_transposed_mode(const std::string & s); // throws rrr::Error naming the value

struct TrainerSettings {
    TransposedMode transposed = TransposedMode::Auto;
    // GraphOptions::flash_attn for every pass: -1 on a GPU with a kernel for the model's heads
    // (on the CPU the plain path is as fast), 0 off, 1 on (throws where the device has no kernel).
    int flash_attn = -1;
    // GraphOptions::fused_attn_backward for every step. On a GPU the node runs on a backend of
    // our own beside ggml-cuda's (custom_backend.h, CUDA builds only). Off unless asked: its CUDA
    // kernels are not yet measured against ggml's ops.
    bool fused_attn_backward = false;
    // Its work space (GraphOptions::attn_scratch_bytes): -1 for 256 MiB on a GPU and none on the
    // CPU; on the CPU a size runs the GPU's steps in slow loops (attn_backward.h).
    int64_t attn_workspace_bytes = -1;
    // GraphOptions::fused_mlp_backward for every step; on a GPU beside ggml-cuda like the
    // attention's node. Off unless asked: its CUDA kernel is not yet measured against ggml's ops.
    bool fused_mlp_backward = false;
    // GraphOptions::fused_merge for every merged step; on a GPU beside ggml-cuda like the
    // others. Off unless asked: its CUDA kernel is not yet measured against ggml's ops.
    bool fused_merge = false;
    // GraphOptions::fused_lora_backward for every merged step; on a GPU beside ggml-cuda like
    // the others. Off unless asked: not yet timed on a GPU.
    bool fused_lora_backward = false;
    // GraphOptions::fused_lora_16 for every merged step. Off unless asked: 16-bit precision in
    // those gradients, and not yet timed on a GPU.
    bool fused_lora_16 = false;
    // GraphOptions::merge_bf16 for every merged step and log-prob pass. Off unless asked: not yet
    // timed on a GPU, and GeForce cards sum bf16 products in f32 at half their f16 rate.
    bool merge_bf16 = false;
    // With fused_attn_backward: its work space's steps multiply f16 copies of Q, K, V, dO, the
    // probabilities and their gradient (f32 sums), where they multiply f32 (TF32 on a GPU):
    // GraphOptions::attn_half. Off unless asked: not yet timed on a GPU.
    bool fused_attn_f16 = false;
    // GraphOptions::fused_head for every pass; on a GPU beside ggml-cuda like the others. Off
    // unless asked: not yet timed on a GPU. Throws for a quantized head (the node multiplies f32,
    // f16 and bf16 ones).
    bool fused_head = false;
    // GraphOptions::head_steps: -1 on a GPU (which needs them) and not on the CPU; on the CPU
    // 1 runs the GPU's steps in slow loops (loss_head.h), to check them.
    int fused_head_steps = -1;
    // GraphOptions::fused_norm_backward for every step; on a GPU beside ggml-cuda like the
    // others. Off unless asked: not yet timed on a GPU, and each node is a run of ours.
    bool fused_norm_backward = false;
    // GraphOptions::gate_up_16 for every step: the MLP's gate and up products written in 16 bits
    // by our node, where merged with the fused MLP backward and adapter gradient nodes. Off unless
    // asked: not yet run on a GPU.
    bool gate_up_16 = false;
    // GraphOptions::swiglu_grad_16 (with gate_up_16). Off unless asked: not yet run on a GPU.
    bool swiglu_grad_16 = false;
    // On a GPU with nodes of ours, how runs of them and of ggml-cuda's ops wait for each other
    // (custom_backend.h): 0 on the host, as the scheduler's pieces; 1 on the device, our backend
    // fronting ggml-cuda; -1 (unset) 0, until the GPU tests have compared 1's numbers with 0's. Refused where no node of ours
    // runs on a GPU.
    int node_waits = -1;
};

struct StepSettings {
    float lr = 0.0f;
    float clip_eps = 0.2f;
    float beta = 0.0f;
    int64_t micro_batch_tokens = 0; // 0: one micro-batch
    GraphOptions graph;
    // Bytes the training pass's compute buffer may take; 0: no limit. The step then picks fewer
    // tokens per micro-batch than micro_batch_tokens where the plan needs it, and with
    // auto_kept_layers as many kept layers (graph.kept_layers) as still fit. Throws when one
    // sequence alone does not fit.
    size_t memory_budget = 0;
    bool auto_kept_layers = false;
    // With auto_kept_layers: where not every layer fits, also weigh more micro-batches than the
    // budget needs, whose smaller activations let more layers be kept, and take the split whose
    // planned work (census FLOPs and bytes at the device's rates) is least.
    bool split_for_kept = true;
    bool profile = false;           // time every op (op_profile.h); slows the step
};

struct StepStats {
    double loss = 0, kl = 0, grad_norm = 0, mean_ratio = 1, mean_logprob = 0, clip_fraction = 0;
    float loss_scale = 1.0f; // what the backward pass's loss was multiplied by (after an overflow, the retry's)
    int64_t tokens = 0;      // tokens run through the training graphs (before padding)
    int64_t loss_tokens = 0; // N
    double ms = 0;
    // Of ms: the host building, placing and planning the passes' graphs (not the optimizer's),
    // before each ran; a GPU waits through it.
    double graph_ms = 0;
    bool skipped = false;    // N == 0: no update
    int64_t micro_batches = 0;
    int64_t micro_batch_tokens = 0; // as settled for the step (0: the whole batch at once)
    int64_t kept_layers = 0;        // as settled for the step
    bool adapter_merged = false;    // as settled for the step (GraphOptions::merge_adapter)
    size_t compute_bytes = 0; // the trainer's compute buffer on its primary device after the step (kept, grows to the largest step)
    Placement placement;     // where this step's graphs ran (backend.h)
    std::vector<OpTime> profile; // with StepSettings::profile: time per op kind, slowest first
};

// Compute-buffer bytes of a step's training pass (train_graph.h: training_pass_bytes).
struct MemoryPlan {
    size_t device = 0; // the primary backend's (the GPU's, or the CPU's when it is the only one)
    size_t cpu = 0;    // the CPU's beside a GPU (ops it cannot run); 0 without a GPU
    // As settled within StepSettings::memory_budget:
    int64_t micro_batch_tokens = 0;
    int64_t kept_layers = 0;
    int64_t micro_batches = 0;
    bool adapter_merged = false; // GraphOptions::merge_adapter, as a step would settle it
    int fuse_adapter = 0;        // GraphOptions::fuse_adapter, likewise (0, 1 or 2)
    // With plan(..., census): the training passes' ops over all micro-batches (op_profile.h).
    std::vector<OpCensus> census;
    // With it, the runs of our nodes over all micro-batches' passes (Census::custom_runs).
    int64_t census_custom_runs = 0;
    // The step's work (its census on the device's kernels) at the device's rates, as
    // StepSettings::split_for_kept weighs splits: a relative cost, not a prediction.
    double estimated_ms = 0;
};

class Trainer {
public:
    Trainer(std::shared_ptr<ModelCore> model, const AdapterSpec & spec, const AdamWConfig & opt, const TrainerSettings & ts = {});
    ~Trainer();
    Trainer(const Trainer &) = delete;
    Trainer & operator=(const Trainer &) = delete;

    // The caller holds model()->mu for all of these.
    StepStats step(const std::vector<TrainSeq> & batch, const StepSettings & s);
    // Loss and statistics at the current parameters, no gradients.
    StepStats evaluate(const std::vector<TrainSeq> & batch, const StepSettings & s);
    // Loss and gradients (left in optimizer().grads()), no update.
    StepStats gradients(const std::vector<TrainSeq> & batch, const StepSettings & s);
    // What a step over `batch` sequences of `len` tokens, every one trained, would take in compute
    // buffers with these settings: planned, not run (micro-batching, KL and kept layers apply).
    // With `census`, also counts the graphs' work for those kernels (MemoryPlan::census).
    MemoryPlan plan(int64_t batch, int64_t len, const StepSettings & s, std::optional<CensusKernels> census = std::nullopt);
    // Per-token log-probs (index t: token t; index 0 is 0), with or without the adapter.
    std::vector<std::vector<float>> logprobs(const std::vector<std::vector<int32_t>> & seqs, bool with_adapter, int64_t micro_batch_tokens);

    const std::shared_ptr<ModelCore> & model() const { return model_; }
    Adapter & adapter() { return *adapter_; }
    AdamW & optimizer() { return *opt_; }
    // Bytes of the transposed frozen weights kept (0: transposed in each step's graphs).
    size_t transposed_bytes() const;
    bool flash_attn() const { return flash_attn_; }
    bool fused_attn_backward() const { return fused_attn_; }
    bool fused_mlp_backward() const { return fused_mlp_; }
    bool fused_lora_backward() const { return fused_lora_; }
    bool fused_lora_16() const { return fused_lora16_; }
    bool fused_merge() const { return fused_merge_; }
    bool merge_bf16() const { return merge_bf16_; }
    bool fused_attn_f16() const { return attn_half_; }
    bool fused_head() const { return fused_head_; }
    bool fused_norm_backward() const { return fused_norm_; }
    bool gate_up_16() const { return gate_up16_; }
    bool swiglu_grad_16() const { return swiglu_grad16_; }
    bool node_device_waits() const { return node_device_waits_; }

private:
    std::shared_ptr<ModelCore> model_;
    std::unique_ptr<Adapter> adapter_;
    std::unique_ptr<AdamW> opt_;
    // What a training pass adds its gradients into: the optimizer's, each and as one flat tensor.
    GradBuffers grad_buffers() const { return {opt_->grads(), opt_->grads_whole()}; }
    std::unique_ptr<TransposedWeights> transposed_;
    bool flash_attn_ = false;
    bool fused_attn_ = false;
    bool fused_mlp_ = false;
    bool fused_merge_ = false;
    bool fused_lora_ = false;
    bool fused_lora16_ = false;
    bool merge_bf16_ = false;
    bool attn_half_ = false;
    bool fused_head_ = false;
    bool head_steps_ = false;
    bool fused_norm_ = false;
    bool gate_up16_ = false;
    bool swiglu_grad16_ = false;
    bool attn_tf32_ = false;
    size_t attn_scratch_ = 0;      // the fused node's GPU products may round to TF32 (no f32 weights)
    ggml_backend_t custom_backend_ = nullptr; // runs our nodes beside a GPU backend; owned
    bool node_device_waits_ = false;          // custom_backend_ fronts the GPU backend
    bool adapted_f16_ = false; // every adapted projection's frozen weight is f16
    ggml_backend_sched_t sched_ = nullptr;
    size_t sched_size_ = 0;
    int64_t last_auto_kept_ = 1; // where the next 'auto' kept-layer search starts
    // The last split_for_kept answer, reused while batches keep its shape and the settings that
    // size a step's buffers (`what`: kept f16, merging, fusing, KL, LM-head chunk rows) stay.
    struct SplitMemo {
        int64_t seqs = -1, longest = 0, tokens = 0, budget_tokens = 0;
        size_t budget = 0;
        int64_t what = 0;
        int64_t micro_batch_tokens = 0;
    } split_memo_;

    ggml_backend_sched_t sched_for(const std::vector<MicroBatch> & mbs, const GraphOptions & g);
    ggml_backend_sched_t new_sched(size_t n_nodes) const;
    // Nodes a scheduler needs for the training graphs over these micro-batches.
    size_t graph_nodes(const std::vector<MicroBatch> & mbs, const GraphOptions & g) const;
    // The largest compute buffers the training passes over these micro-batches plan: the
    // primary backend's and (beside a GPU) the CPU's. Runs and allocates nothing.
    // Sums the passes' op census into `census` when given.
    std::pair<size_t, size_t> planned_bytes(const std::vector<MicroBatch> & mbs, const LossSpec & loss, const GraphOptions & g,
                                            Census * census = nullptr);
    // The (validated) batch in micro-batches, with s.micro_batch_tokens and s.graph.kept_layers settled within
    // s.memory_budget (StepSettings); n: trained tokens, tokens: all tokens.
    std::vector<MicroBatch> fit(const std::vector<TrainSeq> & batch, StepSettings & s, const LossSpec & loss, int64_t & n, int64_t & tokens);
    // The most kept layers that fit s.memory_budget over these micro-batches, at least `lo` (known to fit).
    int64_t most_kept(const std::vector<MicroBatch> & mbs, const StepSettings & s, const LossSpec & loss, int64_t lo);
    // A step's estimated time over these micro-batches from its census (split_for_kept): the
    // plan's census on the device's own kernels, priced at the device's rates (priced_ms).
    double estimated_ms(const std::vector<MicroBatch> & mbs, const StepSettings & s, const LossSpec & loss);
    double priced_ms(const Census & census) const;
    CensusKernels device_kernels() const;
    // The caller's graph options with what the trainer decides: its kept Wᵀ, GPU chunk size.
    GraphOptions graph_options(const GraphOptions & asked) const;
    // `then` runs on the same scheduler before the statistics are final (the optimizer update).
    StepStats run(const std::vector<TrainSeq> & batch, const StepSettings & s, bool backward,
                  const std::function<void(StepStats &)> & then = {});
};

} // namespace rrr

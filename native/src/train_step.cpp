#include "train_step.h"
#ifdef RRR_HAVE_CUDA
#include "custom_backend.h"
#endif
#include "clock.h"
#include "decode.h"
#include "errors.h"
#include "micro_batches.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

namespace rrr {

namespace {

void validate(const ModelConfig & c, const std::vector<TrainSeq> & batch, const char * what) {
    if (batch.empty()) throw Error(std::string(what) + ": empty batch");
    const bool has_old = !batch[0].old_lp.empty();
    for (size_t i = 0; i < batch.size(); ++i) {
        const TrainSeq & s = batch[i];
        const std::string at = std::string(what) + ": sequence " + std::to_string(i);
        const size_t n = s.tokens.size();
        if (n == 0) throw Error(at + " is empty");
        if ((int64_t) n > c.n_ctx_train) {
            throw Error("context overflow: " + at + " has " + std::to_string(n) + " tokens, the model's context length is " +
                        std::to_string(c.n_ctx_train));
        }
        for (int32_t t : s.tokens) {
            if (t < 0 || t >= c.n_vocab) {
                throw Error(at + ": token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(c.n_vocab) + ")");
            }
        }
        if (s.weights.size() != n) throw Error(at + " has " + std::to_string(n) + " tokens but " + std::to_string(s.weights.size()) + " weights");
        if (!s.mask.empty() && s.mask.size() != n) throw Error(at + " has " + std::to_string(n) + " tokens but a mask of " + std::to_string(s.mask.size()));
        if (s.old_lp.empty() == has_old) {
            throw Error(std::string(what) + ": oldLogprobs must be given for every sequence or for none (sequence " + std::to_string(i) + ")");
        }
        if (has_old && s.old_lp.size() != n) {
            throw Error(at + " has " + std::to_string(n) + " tokens but " + std::to_string(s.old_lp.size()) + " oldLogprobs");
        }
        for (size_t t = 1; t < n; ++t) {
            if (!std::isfinite(s.weights[t])) throw Error(at + ": weight " + std::to_string(t) + " is not finite");
            if (has_old && !std::isfinite(s.old_lp[t]) && (s.mask.empty() ? s.weights[t] != 0 : s.mask[t] != 0)) {
                throw Error(at + ": oldLogprobs[" + std::to_string(t) + "] is not finite");
            }
        }
    }
}

} // namespace

TransposedMode parse_transposed_mode(const std::string & s) {
    if (s == "auto") return TransposedMode::Auto;
    if (s == "cache") return TransposedMode::Cache;
    if (s == "per-step") return TransposedMode::PerStep;
    throw Error("transposedWeights: expected auto, cache or per-step, got '" + s + "'");
}

Trainer::Trainer(std::shared_ptr<ModelCore> model, const AdapterSpec & spec, const AdamWConfig & opt, const TrainerSettings & ts)
    : model_(std::move(model)) {
    adapter_ = std::make_unique<Adapter>(*model_->weights, spec, model_->backends->primary());
    opt_ = std::make_unique<AdamW>(adapter_->params(), adapter_->params_whole(), model_->backends->primary(), opt);
    const Backends & b = *model_->backends;
    bool keep = ts.transposed == TransposedMode::Cache;
    if (ts.transposed == TransposedMode::Auto && !b.is_gpu()) {
        // On the CPU the copy (the model again, in f16) saves the step transposing it (2-layer
        // 1.5B shape, 4 x 256 tokens: 11.0 -> 9.4 s a step), where it is small beside RAM (ggml
        // reports all of RAM as free, so a share of the total). A GPU transposes at its memory
        // bandwidth: on an H200 the kept copy (2.9 GB, Qwen2.5-1.5B) bought 0.4% (16,358 against
        // 16,300 tok/s), where the same memory keeps four layers' activations under a budget
        // (3.6 ms a step each), so a GPU keeps none unless asked.
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(ggml_backend_get_device(b.primary()), &free, &total);
        keep = (double) TransposedWeights::bytes_needed(*model_->weights) <= 0.25 * (double) total;
    }
    if (keep) transposed_ = std::make_unique<TransposedWeights>(*model_->weights, b);
    adapted_f16_ = true;
    for (int64_t il = 0; il < (int64_t) adapter_->layers().size(); ++il) {
        for (size_t t = 0; t < kLoraTargets; ++t) {
            if (adapter_->layers()[(size_t) il][(LoraTarget) t].a) adapted_f16_ = adapted_f16_ && Adapter::base_weight(*model_->weights, il, (LoraTarget) t)->type == GGML_TYPE_F16;
        }
    }
    // The training graphs give flash attention f32 K and V views (ggml-cuda converts them itself).
    const ModelConfig & c = model_->weights->config();
    const bool kernel = flash_attn_supported(b.primary(), c, GGML_TYPE_F32);
    if (ts.flash_attn > 0 && !kernel) {
        throw Error("flashAttn: " + b.name() + " has no flash-attention kernel for this model's heads (head size " + std::to_string(c.head_dim) + ")");
    }
    flash_attn_ = ts.flash_attn < 0 ? b.is_gpu() && kernel : ts.flash_attn > 0;
    fused_attn_ = ts.fused_attn_backward;
    fused_mlp_ = ts.fused_mlp_backward;
    fused_merge_ = ts.fused_merge;
    fused_lora_ = ts.fused_lora_backward;
    fused_lora16_ = ts.fused_lora_16;
    merge_bf16_ = ts.merge_bf16;
    attn_half_ = ts.fused_attn_f16;
    fused_head_ = ts.fused_head;
    fused_norm_ = ts.fused_norm_backward;
    gate_up16_ = ts.gate_up_16;
    swiglu_grad16_ = ts.swiglu_grad_16;
    head_steps_ = ts.fused_head_steps < 0 ? b.is_gpu() : ts.fused_head_steps > 0;
    if (fused_head_ && b.is_gpu() && !head_steps_) throw Error("fusedHeadSteps: a GPU's head node cannot go without its steps");
    if (fused_head_) {
        const ggml_type ht = model_->weights->output->type;
        if (ht != GGML_TYPE_F32 && ht != GGML_TYPE_F16 && ht != GGML_TYPE_BF16) {
            throw Error(std::string("fusedHead: the model's output weight is ") + ggml_type_name(ht) + "; the head node multiplies f32, f16 and bf16 heads only");
        }
    }
    // Switches that refine another one would do nothing alone: said, not ignored. The messages name
    // TrainerOptions; the CLI says them in its own flags (src/cli/step-flags.ts, inFlags).
    if (attn_half_ && !fused_attn_) throw Error("fusedAttnF16: it sets how the fused attention backward multiplies; give fusedAttnBackward too");
    if (fused_lora16_ && !(fused_lora_ && fused_mlp_)) {
        throw Error("fusedLora16: it sets how the adapters' nodes take the SwiGLU node's gradients; give fusedLoraBackward and fusedMlpBackward too");
    }
    if (gate_up16_ && (!fused_lora_ || !fused_mlp_)) {
        throw Error("gateUp16: the 16-bit gate and up are read by the SwiGLU's node and down's adapter node; give fusedLoraBackward and fusedMlpBackward too");
    }
    if (swiglu_grad16_ && !gate_up16_) throw Error("swigluGrad16: the SwiGLU's node reads a 16-bit gradient only beside 16-bit gate and up; give gateUp16 too");
    attn_scratch_ = ts.attn_workspace_bytes >= 0 ? (size_t) ts.attn_workspace_bytes : b.is_gpu() ? (256ull << 20) : 0;
    // The GPU's kernels cannot go without one: any size gets at least one sequence's.
    if (b.is_gpu()) attn_scratch_ = std::max<size_t>(attn_scratch_, 1);
    // The switches that put a node of ours in the graph, by name; the first one given, if any.
    const std::pair<bool, const char *> node_switches[] = {{fused_attn_, "fusedAttnBackward"}, {fused_mlp_, "fusedMlpBackward"}, {fused_merge_, "fusedMerge"},
                                                           {fused_lora_, "fusedLoraBackward"},  {fused_head_, "fusedHead"},       {fused_norm_, "fusedNormBackward"},
                                                           {gate_up16_, "gateUp16"}};
    const auto given = std::find_if(std::begin(node_switches), std::end(node_switches), [](const auto & sw) { return sw.first; });
    const char * node_switch = given != std::end(node_switches) ? given->second : nullptr;
    const bool nodes_of_ours = node_switch != nullptr;
    if (ts.node_waits >= 0 && !(nodes_of_ours && b.is_gpu())) {
        throw Error("nodeWaits: it sets how a GPU's runs of our nodes and of ggml-cuda's ops wait for each other; it needs a GPU (this model is on " + b.name() +
                    ") and one of our nodes (fusedAttnBackward and the like)");
    }
    node_device_waits_ = ts.node_waits == 1;
    if (nodes_of_ours && b.is_gpu()) {
#ifdef RRR_HAVE_CUDA
        custom_backend_ = custom_backend_new(b.primary(), node_device_waits_);
#else
        throw Error(std::string(node_switch) + ": " + b.name() + " needs a CUDA build of the addon to run it");
#endif
    }
    // Products over f32 weights stay f32 on a GPU (ggml-cuda's are); below that, the node's
    // inner products may round their inputs as the model's own products do.
    attn_tf32_ = b.is_gpu() && model_->weights->layers[0].wq->type != GGML_TYPE_F32;
}

size_t Trainer::transposed_bytes() const { return transposed_ ? transposed_->bytes() : 0; }

GraphOptions Trainer::graph_options(const GraphOptions & asked) const {
    GraphOptions g = asked;
    g.transposed = transposed_.get();
    g.flash_attn = flash_attn_;
    // Merging the adapter into f16 weights beat fusing it on an H200 (Qwen2.5-1.5B shape, 16 x 512
    // tokens: 17,463 against 16,358 tok/s, 469 against 501 ms a step), at the cost of rounding
    // s B A into the weight's f16, as fine as the f16 input the product rounds x to anyway. Only
    // where nothing asked to fuse, and never with dropout (the adapter reads another input).
    if (g.merge_adapter < 0) {
        g.merge_adapter = g.fuse_adapter < 0 && model_->backends->is_gpu() && adapted_f16_ && adapter_->spec().dropout == 0 ? 1 : 0;
    }
    // Fusing the adapter saves passes over activations, which bound a GPU's step; the CPU's is
    // bound by its products, and the copies of the weights made it 2% slower there (2-layer
    // Qwen2.5-1.5B shape, 4 x 256 tokens, five steps each: 9.22 s on average against 9.03 s).
    if (g.fuse_adapter < 0) g.fuse_adapter = model_->backends->is_gpu() ? 2 : 0;
    g.share_input_cast = !model_->backends->is_gpu();
    g.fused_attn_backward = fused_attn_;
    g.fused_mlp_backward = fused_mlp_;
    g.fused_merge = fused_merge_;
    g.fused_lora_backward = fused_lora_;
    g.fused_lora_16 = fused_lora16_;
    g.merge_bf16 = merge_bf16_;
    g.attn_tf32 = attn_tf32_;
    g.attn_half = attn_half_;
    g.fused_head = fused_head_;
    g.head_steps = head_steps_;
    g.fused_norm_backward = fused_norm_;
    g.gate_up_16 = gate_up16_;
    g.swiglu_grad_16 = swiglu_grad16_;
    // The GPU's node works through a few sequences at a time in a space of this size (256 MiB:
    // eight sequences of 512 positions, 12 query and 2 K/V heads of 128, so the batched products
    // over (K/V head, sequence) pairs have 16 to share the GPU); the CPU's needs none.
    g.attn_scratch_bytes = attn_scratch_;
    // New masks every optimizer step; gradients() and evaluate() see the ones the next step will.
    g.dropout = adapter_->spec().dropout;
    g.dropout_seed = adapter_->spec().seed * 0x9E3779B97F4A7C15ull + (uint64_t) opt_->steps() + 1;
    // On a GPU, LM-head chunks of ~1,000 rows at a 152k vocabulary (~640 MB of f32 logits):
    // measured on an H100 at 16 x 512 tokens, 1,024-row chunks ran 2% faster than the default
    // ~220 and kept the graph in one piece where 38 chunks' inputs made the scheduler cut it in 4.
    if (g.chunk_rows == 0 && model_->backends->is_gpu()) g.chunk_rows = std::max<int64_t>(1, (160ll << 20) / model_->weights->config().n_vocab);
    return g;
}

Trainer::~Trainer() {
    if (sched_) ggml_backend_sched_free(sched_);
    if (custom_backend_) ggml_backend_free(custom_backend_);
}

// Training graphs are far larger than the inference ones and get their own scheduler, so the
// model's forward passes do not keep a training-sized compute buffer alive.
ggml_backend_sched_t Trainer::sched_for(const std::vector<MicroBatch> & mbs, const GraphOptions & g) {
    const size_t need = graph_nodes(mbs, g);
    if (sched_ && need <= sched_size_) return sched_;
    if (sched_) ggml_backend_sched_free(sched_);
    sched_ = nullptr;
    sched_size_ = need;
    sched_ = new_sched(sched_size_);
    return sched_;
}

size_t Trainer::graph_nodes(const std::vector<MicroBatch> & mbs, const GraphOptions & g) const {
    size_t need = 8192;
    for (const MicroBatch & mb : mbs) need = std::max(need, train_graph_nodes(model_->weights->config(), g, (int64_t) mb.rows.size()));
    return need;
}

ggml_backend_sched_t Trainer::new_sched(size_t n_nodes) const {
    ggml_backend_sched_t s = model_->backends->new_sched(n_nodes, custom_backend_, node_device_waits_);
    if (!s) throw Error("could not create the training scheduler");
    return s;
}

StepStats Trainer::run(const std::vector<TrainSeq> & batch, const StepSettings & s, bool backward,
                       const std::function<void(StepStats &)> & then) {
    const auto t0 = Clock::now();
    if (!(s.beta >= 0) || !std::isfinite(s.beta)) throw Error("step: beta must be a finite number >= 0");
    if (!(s.clip_eps > 0 && s.clip_eps < 1)) throw Error("step: clipEps must be in (0, 1)");
    const ModelWeights & w = *model_->weights;
    validate(w.config(), batch, "step");
    const LossSpec loss{!batch[0].old_lp.empty(), s.beta > 0, s.clip_eps};
    StepSettings settled = s;
    PackedBatch p;
    p.has_old = loss.has_old;
    p.mbs = fit(batch, settled, loss, p.n, p.tokens);
    StepStats st;
    st.loss_tokens = p.n;
    st.micro_batches = (int64_t) p.mbs.size();
    st.micro_batch_tokens = settled.micro_batch_tokens;
    st.kept_layers = settled.graph.recompute ? settled.graph.kept_layers : w.config().n_layer;
    if (p.n == 0) {
        st.skipped = true;
        if (sched_) st.compute_bytes = compute_buffer_bytes(sched_, model_->backends->primary());
        st.ms = ms_since(t0);
        return st;
    }
    const GraphOptions g = graph_options(settled.graph);
    st.adapter_merged = g.merge_adapter > 0;
    ggml_backend_sched_t sched = sched_for(p.mbs, g);
    std::unique_ptr<OpProfiler> prof = s.profile ? std::make_unique<OpProfiler>(sched) : nullptr;
    if (backward) opt_->zero_grads();

    double pg = 0, kl = 0, sum_rho = 0, sum_lp = 0;
    double largest = 0; // the largest per-token coefficient of the loss's gradient, times N
    int64_t clipped = 0;
    // Micro-batches of one shape run one training graph, built once, when nothing else runs on
    // the scheduler between them (KL's base-model passes do).
    TrainingPassCachePtr cache = backward && !loss.kl && p.mbs.size() > 1 ? new_training_pass_cache() : nullptr;
    for (MicroBatch & mb : p.mbs) {
        if (loss.kl) mb.ref_lp = compute_logprobs(w, LoraView{}, sched, mb, g, &st.placement, &st.graph_ms);
        const std::vector<float> lp = backward ? accumulate_gradients(w, *adapter_, grad_buffers(), sched, mb, loss, g, &st.placement, &st.graph_ms, cache.get())
                                               : compute_logprobs(w, adapter_->view(), sched, mb, g, &st.placement, &st.graph_ms);
        for (size_t r = 0; r < lp.size(); ++r) {
            const double a = mb.w[r];
            double rho = 1.0;
            if (loss.has_old) {
                rho = std::exp((double) lp[r] - (double) mb.old_lp[r]);
                const double cl = std::min(std::max(rho, 1.0 - s.clip_eps), 1.0 + s.clip_eps);
                pg += std::min(rho * a, cl * a);
                clipped += cl * a < rho * a ? 1 : 0;
            } else {
                pg += a * lp[r];
            }
            double coef = std::fabs(a) * rho;
            if (loss.kl) {
                const double d = (double) mb.ref_lp[r] - (double) lp[r];
                kl += std::exp(d) - d - 1.0;
                coef += (double) s.beta * std::max(1.0, std::exp(d));
            }
            largest = std::max(largest, coef);
            sum_rho += rho;
            sum_lp += lp[r];
        }
    }
    if (cache) {
        cache.reset();
        ggml_backend_sched_reset(sched);
    }
    const double n = (double) p.n;
    st.kl = kl / n;
    st.loss = -pg / n + (double) s.beta * st.kl;
    st.mean_ratio = sum_rho / n;
    st.mean_logprob = sum_lp / n;
    st.clip_fraction = (double) clipped / n;
    st.tokens = p.tokens;
    if (backward) {
        st.grad_norm = opt_->grad_norm(sched, 1.0f / p.mbs[0].loss_scale);
        const float retry = loss_scale(largest / n);
        if (!std::isfinite(st.grad_norm) && std::isfinite(st.loss) && retry < p.mbs[0].loss_scale) {
            // An f16 product overflowed (65504): the scale came from the weights alone, and ratios
            // to old log-probs (or to the base model, for KL) can be far larger. The same pass
            // again with the scale from the coefficients as they came out: rare, so it costs a
            // pass only then.
            const float by = retry / p.mbs[0].loss_scale; // a power of two: exact
            opt_->zero_grads();
            for (MicroBatch & mb : p.mbs) {
                for (float & v : mb.neg_w) v *= by;
                for (float & v : mb.kl_m) v *= by;
                mb.loss_scale = retry;
                accumulate_gradients(w, *adapter_, grad_buffers(), sched, mb, loss, g, &st.placement, &st.graph_ms);
            }
            st.grad_norm = opt_->grad_norm(sched, 1.0f / retry);
        }
        st.loss_scale = p.mbs[0].loss_scale;
        if (!std::isfinite(st.grad_norm)) {
            throw Error(std::string("step: the gradient is not finite (loss ") + std::to_string(st.loss) +
                        "): the adapter was not updated. Non-finite activations, or old log-probs far from the model's?");
        }
        st.placement.merge(opt_->placement());
    }
    if (then) then(st);
    if (prof) st.profile = prof->result();
    st.compute_bytes = compute_buffer_bytes(sched, model_->backends->primary());
    st.ms = ms_since(t0);
    return st;
}

StepStats Trainer::step(const std::vector<TrainSeq> & batch, const StepSettings & s) {
    if (!(s.lr >= 0) || !std::isfinite(s.lr)) throw Error("step: lr must be a finite number >= 0");
    return run(batch, s, true, [&](StepStats & st) {
        const float clip = opt_->config().grad_clip;
        const float scale = clip > 0 && st.grad_norm > clip ? (float) (clip / st.grad_norm) : 1.0f;
        opt_->update(sched_, s.lr, scale);
        st.placement.merge(opt_->placement());
    });
}

StepStats Trainer::evaluate(const std::vector<TrainSeq> & batch, const StepSettings & s) { return run(batch, s, false); }

StepStats Trainer::gradients(const std::vector<TrainSeq> & batch, const StepSettings & s) { return run(batch, s, true); }

std::vector<std::vector<float>> Trainer::logprobs(const std::vector<std::vector<int32_t>> & seqs, bool with_adapter, int64_t micro_batch_tokens) {
    std::vector<TrainSeq> batch(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
        batch[i].tokens = seqs[i];
        batch[i].weights.assign(seqs[i].size(), 0.0f);
        batch[i].mask.assign(seqs[i].size(), 1);
    }
    StepSettings st;
    st.micro_batch_tokens = micro_batch_tokens;
    const ModelWeights & w = *model_->weights;
    validate(w.config(), batch, "logprobs");
    PackedBatch p = pack_micro_batches(batch, st);
    std::vector<std::vector<float>> out(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) out[i].assign(seqs[i].size(), 0.0f);
    if (p.n == 0) return out;
    GraphOptions g = graph_options(st.graph);
    g.dropout = 0.0f; // log-probs of the model as it is, as generation sees it
    ggml_backend_sched_t sched = sched_for(p.mbs, g);
    const LoraView view = with_adapter ? adapter_->view() : LoraView{};
    for (const MicroBatch & mb : p.mbs) {
        const std::vector<float> lp = compute_logprobs(w, view, sched, mb, g);
        for (size_t r = 0; r < lp.size(); ++r) {
            const int64_t b = mb.rows[r] / mb.L, pos = mb.rows[r] % mb.L;
            out[(size_t) mb.seq_index[(size_t) b]][(size_t) pos + 1] = lp[r];
        }
    }
    return out;
}

} // namespace rrr

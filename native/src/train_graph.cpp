#include "train_graph.h"
#include "attn_backward.h"
#include "clock.h"
#include "errors.h"
#include "lora_backward.h"
#include "lora_merge.h"
#include "loss_head.h"
#include "norm_backward.h"
#include "op_profile.h"
#include "product16.h"
#include "rng.h"
#include "swiglu_backward.h"
#include "swiglu_forward.h"
#include "transposed_weights.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>

namespace rrr {

namespace {

// About 32M logits (128 MiB of f32) per LM-head chunk: the only full-vocabulary tensors.
constexpr int64_t kChunkLogits = 32ll << 20;
// The LM head's chunks in one pass, at most (chunk_rows_for).
constexpr int64_t kMaxHeadChunks = 128;

struct GraphMem {
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    explicit GraphMem(size_t n_nodes) {
        ggml_init_params ip{ggml_tensor_overhead() * n_nodes * 2 + ggml_graph_overhead_custom(n_nodes, false), nullptr, true};
        ctx = ggml_init(ip);
        if (!ctx) throw Error("out of host memory building the training graph");
        gf = ggml_new_graph_custom(ctx, n_nodes, false);
    }
    ~GraphMem() { ggml_free(ctx); }
};

struct Inputs {
    ggml_tensor * tokens = nullptr, * positions = nullptr, * mask = nullptr;
    ggml_tensor * mask16 = nullptr; // the causal mask in f16, as flash attention takes it
    ggml_tensor * rows = nullptr, * targets = nullptr, * flat_idx = nullptr;
    ggml_tensor * neg_w = nullptr, * kl_m = nullptr, * old_lp = nullptr, * ref_lp = nullptr;
    ggml_tensor * iota = nullptr; // 0..n-1, to dequantise frozen weights with get_rows
    // LoRA dropout's masks (GraphOptions::dropout): a random phase factor per input value and
    // adapter, [n_widest, n_layer * kLoraTargets], and one per token, [T].
    ggml_tensor * drop_u = nullptr, * drop_v = nullptr;
};

struct Proj {
    ggml_tensor * y = nullptr;
    ggml_tensor * a = nullptr; // s A x, kept for dB
    ggml_tensor * wm = nullptr; // a recomputed merged product's W + s B A, for its backward (Builder::proj)
    ggml_tensor * wt = nullptr; // or (W + s B A)ᵀ itself, where our merge node made it (GraphOptions::fused_merge)
};

struct LayerActs {
    ggml_tensor * x = nullptr, * h1 = nullptr;
    Proj q, k, v;
    ggml_tensor * q3 = nullptr, * k3 = nullptr; // [hd, heads, T] before the qk norm
    ggml_tensor * qr = nullptr, * kr = nullptr; // after rope
    ggml_tensor * v3 = nullptr;                 // [hd, n_head_kv, T]
    ggml_tensor * P = nullptr;                  // attention probabilities [L, L, n_head, B]
    ggml_tensor * attn = nullptr;               // [hd * n_head, T]
    Proj o;
    ggml_tensor * x2 = nullptr, * h2 = nullptr;
    Proj g, u;
    ggml_tensor * act = nullptr;
    Proj d;
    ggml_tensor * out = nullptr;
};

// When projs_back() puts a group's adapter nodes (GraphOptions::fused_lora_backward) in the
// graph: at once, or at the next flush, beside a node of ours.
enum class LoraWhen { Now, Later };

class Builder {
public:
    // `opt` as the trainer settled it (Trainer::graph_options): fuse_adapter 0, 1 or 2.
    Builder(ggml_context * ctx, ggml_cgraph * gf, const ModelWeights & w, const LoraView & lora, const Inputs & in, int64_t L, int64_t B,
            const GraphOptions & opt)
        : transposed(opt.transposed), merged(opt.merge_adapter > 0), flash(opt.flash_attn), share_cast(opt.share_input_cast),
          fused_attn(opt.fused_attn_backward), attn_tf32(opt.attn_tf32), attn_half(opt.attn_half), fused_mlp(opt.fused_mlp_backward), merge_nodes(opt.merge_adapter > 0 && opt.fused_merge), merge_bf16(opt.merge_bf16), lora_nodes(opt.merge_adapter > 0 && opt.fused_lora_backward && opt.dropout == 0),
          lora16(lora_nodes && opt.fused_mlp_backward && opt.fused_lora_16), recompute(opt.recompute), kept_norms(opt.kept_norms), kept_layers(opt.kept_layers), fuse(opt.fuse_adapter), dropout(opt.dropout),
          attn_scratch(opt.attn_scratch_bytes), fused_head(opt.fused_head), head_steps(opt.head_steps), fused_norm(opt.fused_norm_backward),
          gate_up16(lora_nodes && opt.fused_mlp_backward && opt.gate_up_16), swiglu_grad16(gate_up16 && opt.swiglu_grad_16), ctx_(ctx),
          gf_(gf), w_(w), c_(w.config()), lora_(lora), in_(in), L_(L), B_(B), T_(L * B) {
        for (ggml_tensor * t = ggml_get_first_tensor(ctx); t; t = ggml_get_next_tensor(ctx, t)) mark_ = t; // the inputs keep their names
    }

    std::unordered_map<const ggml_tensor *, ggml_tensor *> grad_of;
    // One tensor over all of grad_of's buffers (the optimizer's flat gradients), or null.
    ggml_tensor * grads_whole = nullptr;
    // Whether layer il keeps its activations for the backward pass (GraphOptions::recompute off
    // keeps every layer's, kept_layers the top layers' dear ones) rather than recomputing them.
    bool keeps(int64_t il) const { return !recompute || il >= c_.n_layer - kept_layers; }
    const TransposedWeights * const transposed;
    const bool merged, flash, share_cast, fused_attn, attn_tf32, attn_half, fused_mlp, merge_nodes, merge_bf16, lora_nodes, lora16, recompute, kept_norms;
    const int64_t kept_layers;
    const int fuse;
    const float dropout;
    const size_t attn_scratch;
    const bool fused_head, head_steps, fused_norm, gate_up16, swiglu_grad16;
    // "fwd", "re" (recomputed), "bwd" or "lp" (a log-prob pass): with a part, it names the role of
    // the nodes made next in a profiled step.
    std::string phase = "fwd";

    ggml_tensor * embed() {
        ggml_tensor * e = ggml_get_rows(ctx_, w_.tok_embd, in_.tokens);
        done("embed");
        return e;
    }

    // With flash attention the probabilities are made only `with_probs` (for a backward pass
    // that needs them: the fused attention backward recomputes its own).
    // `keep16`: the layer keeps its activations in GraphOptions::kept_f16's halves.
    LayerActs layer_forward(int64_t il, ggml_tensor * x, bool with_probs = false, bool keep16 = false) {
        const LayerWeights & l = w_.layers[il];
        const int64_t hd = c_.head_dim, nh = c_.n_head, nkv = c_.n_head_kv;
        LayerActs a;
        a.x = x;
        // A recomputed layer's backward follows at once: its merge nodes write the transposes too.
        const ggml_type act16 = swiglu_node_type(il);
        if (merge_nodes) {
            premerge(il, phase == "re" ? MergeOut::Both : MergeOut::Weight, nullptr);
            // Two layers' forward merges in one run of our nodes, where each would cut ggml-cuda's
            // graph twice: the second layer's merged weights live one layer longer. With the
            // SwiGLU node, the next layer's merges join its run instead (below).
            if (phase != "re" && il % 2 == 0 && il + 1 < c_.n_layer && act16 == GGML_TYPE_F32) merge_ahead(il + 1, MergeOut::Weight);
        }
        a.h1 = norm_w(x, l.attn_norm);
        done("norm");
        const std::vector<Proj> qkv = projs(a.h1, {{l.wq, pair(il, LoraTarget::Q), l.bq}, {l.wk, pair(il, LoraTarget::K), l.bk}, {l.wv, pair(il, LoraTarget::V), l.bv}});
        a.q = qkv[0];
        a.k = qkv[1];
        a.v = qkv[2];
        a.q3 = ggml_reshape_3d(ctx_, a.q.y, hd, nh, T_);
        a.k3 = ggml_reshape_3d(ctx_, a.k.y, hd, nkv, T_);
        ggml_tensor * qn = c_.qk_norm ? norm_w(a.q3, l.q_norm) : a.q3;
        ggml_tensor * kn = c_.qk_norm ? norm_w(a.k3, l.k_norm) : a.k3;
        done("norm");
        a.qr = rope(qn);
        a.kr = rope(kn);
        a.v3 = ggml_reshape_3d(ctx_, a.v.y, hd, nkv, T_);
        if (flash) {
            // Its result is [hd, n_head, L, B]: already the attention output's layout.
            ggml_tensor * o = ggml_flash_attn_ext(ctx_, by_head(a.qr, nh), by_head(a.kr, nkv), by_head(a.v3, nkv), in_.mask16, kq_scale(), 0.0f, 0.0f);
            ggml_flash_attn_ext_set_prec(o, GGML_PREC_F32);
            a.attn = ggml_reshape_2d(ctx_, o, hd * nh, T_);
            if (with_probs && !fused_attn) a.P = attention_probs(a.qr, a.kr);
        } else {
            a.P = attention_probs(a.qr, a.kr);
            ggml_tensor * Vt = ggml_cont(ctx_, ggml_permute(ctx_, heads4(a.v3, nkv), 1, 2, 0, 3)); // [L, hd, nkv, B]
            ggml_tensor * kqv = ggml_mul_mat(ctx_, Vt, a.P);                                 // [hd, L, nh, B]
            a.attn = ggml_cont_2d(ctx_, ggml_permute(ctx_, kqv, 0, 2, 1, 3), hd * nh, T_);
        }
        done("attn");
        a.o = projs(a.attn, {{l.wo, pair(il, LoraTarget::O), nullptr}})[0];
        a.x2 = ggml_add(ctx_, x, a.o.y);
        done("resid");

        a.h2 = norm_w(a.x2, l.ffn_norm);
        done("norm");
        const ggml_type gu16 = gate_up_type(il);
        const std::vector<Proj> gu = projs(a.h2, {{l.w_gate, pair(il, LoraTarget::Gate), nullptr}, {l.w_up, pair(il, LoraTarget::Up), nullptr}}, gu16);
        a.g = gu[0];
        a.u = gu[1];
        ggml_tensor * g = a.g.y, * u = a.u.y;
        if (gu16 != GGML_TYPE_F32) {
            // Read in their 16 bits by both SwiGLU nodes: the forward's silu(g)·u in the same type
            // (down's product input), made only where something reads it.
            a.act = swiglu_forward(ctx_, g, u, gu16);
            done("mlp");
            if (act16 != GGML_TYPE_F32) {
                ggml_build_forward_expand(gf_, a.act);
                if (il + 1 < c_.n_layer) merge_ahead(il + 1, MergeOut::Weight);
            }
        } else if (keep16) {
            a.g.y = ggml_cast(ctx_, g, GGML_TYPE_F16);
            a.u.y = ggml_cast(ctx_, u, GGML_TYPE_F16);
            // The SwiGLU of the halves is the f16 input the down product would round its input
            // to anyway, and is half the bytes; the adapter path and quantized products take f32.
            if (reads_f16(l.w_down, pair(il, LoraTarget::Down))) {
                g = a.g.y;
                u = a.u.y;
            }
        }
        if (a.act) {
            // made above, of the 16-bit gate and up
        } else if (act16 != GGML_TYPE_F32 && g->type == GGML_TYPE_F32) {
            a.act = swiglu_forward(ctx_, g, u, act16);
            done("mlp");
            ggml_build_forward_expand(gf_, a.act);
            if (il + 1 < c_.n_layer) merge_ahead(il + 1, MergeOut::Weight);
        } else {
            a.act = ggml_swiglu_split(ctx_, g, u);
            done("mlp");
        }
        a.d = projs(a.act, {{l.w_down, pair(il, LoraTarget::Down), nullptr}})[0];
        a.out = ggml_add(ctx_, a.x2, a.d.y);
        done("resid");
        return a;
    }

    // A forward layer's output. With merge nodes the graph takes each layer as it is made: the
    // nodes premerge() puts in at once would otherwise come before every op not yet in it, all
    // layers' merged weights alive from the first. Without, the order is the same either way
    // (the loss's parents, layer by layer), and the graph is left as it was.
    ggml_tensor * layer_done(ggml_tensor * out) {
        if (merge_nodes) ggml_build_forward_expand(gf_, out);
        return out;
    }

    // A kept layer (GraphOptions::kept_layers) holds only what is dear to rebuild: the rotated
    // queries and keys, V, the attention output, x2 and the MLP's gate and up products (for
    // Qwen2.5-1.5B at 16 x 512 tokens 722 of the 1,368 MiB all its activations take: `Trainer.plan`).
    // This rebuilds the rest from them for the backward pass: two norms, the attention
    // probabilities (one product of the heads and a softmax) and the SwiGLU. Same ops as the
    // forward, so the same numbers. With GraphOptions::kept_norms the forward's norms are kept.
    LayerActs rebuild_cheap(int64_t il, LayerActs a) {
        const LayerWeights & l = w_.layers[il];
        if (!kept_norms) {
            a.h1 = norm_w(a.x, l.attn_norm);
            done("norm");
        }
        if (!fused_attn) {
            a.P = attention_probs(a.qr, a.kr);
            done("attn");
        }
        if (!kept_norms) {
            a.h2 = norm_w(a.x2, l.ffn_norm);
            done("norm");
        }
        a.act = nullptr; // not kept: rebuilt
        return widened(a);
    }

    // The type our forward SwiGLU node (swiglu_forward.h) writes layer il's silu(g)·u in: the
    // 16-bit type the down product multiplies, where nothing reads it in f32 (merged, so no
    // adapter path; recomputing, so the backward pass rebuilds what it needs) and the SwiGLU
    // node's run can take the next layer's merges; GGML_TYPE_F32 for ggml's SWIGLU.
    ggml_type swiglu_node_type(int64_t il) const {
        if (!fused_mlp || !merge_nodes || !recompute || phase == "re") return GGML_TYPE_F32;
        const ggml_type t = product_input({{w_.layers[il].w_down, pair(il, LoraTarget::Down), nullptr}});
        return is16(t) ? t : GGML_TYPE_F32;
    }

    // The 16-bit type layer il's gate and up products write (GraphOptions::gate_up_16, product16.h):
    // the type both multiply in (their merged weights'), where down's product reads its input in
    // that type too, so the forward SwiGLU node writes it from them; GGML_TYPE_F32 otherwise
    // (ggml's products).
    ggml_type gate_up_type(int64_t il) const {
        if (!gate_up16) return GGML_TYPE_F32;
        const LayerWeights & l = w_.layers[il];
        const ggml_type t = product_input({{l.w_gate, pair(il, LoraTarget::Gate), nullptr}, {l.w_up, pair(il, LoraTarget::Up), nullptr}});
        const ggml_type down = product_input({{l.w_down, pair(il, LoraTarget::Down), nullptr}});
        return is16(t) && t == down ? t : GGML_TYPE_F32;
    }

    // A layer's MLP activations as its backward pass reads them: gate and up in f32 (widened
    // where GraphOptions::kept_f16 kept them in f16) and their SwiGLU (rebuilt where missing, or
    // where the forward's was made of the halves).
    LayerActs widened(LayerActs a) {
        // 16-bit gate and up products (gate_up_type) stay so: the SwiGLU's backward node reads them,
        // and down's adapter node its silu(g)·u
        if (is_product16(a.g.y)) {
            if (!a.act) a.act = swiglu_forward(ctx_, a.g.y, a.u.y, a.g.y->type);
            return a;
        }
        if (a.act && a.act->type != GGML_TYPE_F32) a.act = nullptr; // the forward node's, for the down product
        if (a.g.y->type != GGML_TYPE_F32) {
            a.g.y = ggml_cast(ctx_, a.g.y, GGML_TYPE_F32);
            a.u.y = ggml_cast(ctx_, a.u.y, GGML_TYPE_F32);
            a.act = nullptr;
        }
        if (!a.act) {
            a.act = ggml_swiglu_split(ctx_, a.g.y, a.u.y);
            done("mlp");
        }
        return a;
    }

    // dL/dx of the layer's input given dL/d(out).
    ggml_tensor * layer_backward(int64_t il, const LayerActs & a, ggml_tensor * dout) {
        const LayerWeights & l = w_.layers[il];
        const int64_t hd = c_.head_dim, nh = c_.n_head, nkv = c_.n_head_kv;
        // A layer whose forward pass was not just recomputed has no merged transposes: made here, together.
        if (merge_nodes) premerge(il, MergeOut::Transposed, &a);
        if (lora_nodes) stack_layer_a(il);

        // MLP: out = x2 + W_down (silu(gate) * up)
        // GraphOptions::swiglu_grad_16: in 16 bits, as the SwiGLU node reads its 16-bit gate and up
        const ggml_type d16 = swiglu_grad16 ? gate_up_type(il) : GGML_TYPE_F32;
        ggml_tensor * d_act = projs_back(a.act, {{l.w_down, a.d, pair(il, LoraTarget::Down), dout}}, LoraWhen::Later, nullptr, d16);
        ggml_tensor * d_gate, * d_up;
        ggml_tensor * gate_w = nullptr, * up_w = nullptr; // the gradients as gate's and up's dx products read them
        if (fused_mlp) {
            // 16-bit copies where both products read their gradient in one 16-bit type
            const ggml_type dt = dx_type(l.w_gate, pair(il, LoraTarget::Gate));
            const ggml_type copies = dt == dx_type(l.w_up, pair(il, LoraTarget::Up)) && is16(dt) ? dt : GGML_TYPE_F32;
            // With the adapters' nodes, down's reads silu(g)·u from this node (no SwiGLU rebuilt for
            // it); with GraphOptions::fused_lora_16 gate's and up's read the copies, and the node
            // writes no f32 gradients.
            const bool only16 = lora16 && copies != GGML_TYPE_F32;
            ggml_tensor * gu = swiglu_backward(ctx_, a.g.y, a.u.y, d_act, copies, lora_nodes, !only16);
            done("mlp");
            if (lora_nodes) {
                ggml_tensor * act = swiglu_backward_act(ctx_, gu);
                for (LoraGroup & g : lora_pending_) {
                    if (g.x == a.act) g.x = act;
                }
                // The pending adapter nodes (this layer's down, the layer above's q, k, v) right
                // after the SwiGLU node, in its run. A 16-bit d_act (ours) after the gate and up
                // it runs beside, where ggml's product goes before them.
                if (of_ours(d_act)) prepare_lora({a.h2, a.g.y, a.u.y, d_act});
                else prepare_lora({d_act, a.g.y, a.u.y, a.h2});
                ggml_build_forward_expand(gf_, gu);
                flush_lora();
            }
            if (copies != GGML_TYPE_F32) {
                gate_w = swiglu_backward_copy(ctx_, gu, SwigluGrad::Gate);
                up_w = swiglu_backward_copy(ctx_, gu, SwigluGrad::Up);
            }
            d_gate = only16 ? gate_w : swiglu_backward_part(ctx_, gu, SwigluGrad::Gate);
            d_up = only16 ? up_w : swiglu_backward_part(ctx_, gu, SwigluGrad::Up);
        } else {
            // The pending adapter nodes before ggml's SwiGLU ops.
            if (lora_nodes) {
                prepare_lora({d_act});
                flush_lora();
            }
            d_gate = ggml_silu_back(ctx_, ggml_mul(ctx_, d_act, a.u.y), a.g.y);
            d_up = ggml_swiglu_split(ctx_, a.g.y, d_act); // silu(gate) * d_act in one pass
        }
        done("mlp");
        // Gate's and up's adapter nodes right after the SwiGLU node, in its run; then every
        // flushed group's sums into the gradient buffers, among ggml's ops.
        std::vector<ggml_tensor *> terms2;
        ggml_tensor * dh2 = projs_back(a.h2, {{l.w_gate, a.g, pair(il, LoraTarget::Gate), d_gate, gate_w}, {l.w_up, a.u, pair(il, LoraTarget::Up), d_up, up_w}}, LoraWhen::Now,
                                       fused_norm ? &terms2 : nullptr);
        if (lora_nodes) add_lora();
        done("W");
        ggml_tensor * dx2 = fused_norm ? norm_node(terms2, a.x2, l.ffn_norm, dout) : ggml_add(ctx_, dout, norm_back(dh2, a.x2, l.ffn_norm));
        done("norm");

        // Attention: x2 = x + W_o attn
        ggml_tensor * d_attn = projs_back(a.attn, {{l.wo, a.o, pair(il, LoraTarget::O), dx2}}, LoraWhen::Later);
        done("W");
        // o's adapter nodes in the run the attention node starts, or before ggml's attention ops.
        if (lora_nodes) {
            prepare_lora({d_attn, a.qr, a.kr, a.v3});
            flush_lora();
        }
        ggml_tensor * dqr, * dkr, * dv3;
        if (fused_attn) {
            ggml_tensor * g = attn_backward(ctx_, a.qr, a.kr, a.v3, d_attn, L_, kq_scale(), attn_tf32, attn_half, attn_scratch);
            if (lora_nodes) ggml_build_forward_expand(gf_, g);
            if (merge_nodes && il > 0) {
                // The layer below's merges (its recomputation's, or its backward's transposes)
                // right after this node, in the same piece of ours instead of one of their own.
                ggml_build_forward_expand(gf_, g);
                done("attn");
                const MergeOut need = keeps(il - 1) ? MergeOut::Transposed : MergeOut::Both;
                const std::string was = phase;
                phase = need == MergeOut::Both ? "re" : "bwd";
                merge_ahead(il - 1, need);
                phase = was;
            }
            dqr = attn_backward_part(ctx_, g, AttnGrad::Q);
            dkr = attn_backward_part(ctx_, g, AttnGrad::K);
            dv3 = attn_backward_part(ctx_, g, AttnGrad::V);
        } else {
            attention_backward_ops(a, d_attn, &dqr, &dkr, &dv3);
        }
        if (lora_nodes) {
            done("attn");
            add_lora();
        }
        ggml_tensor * dq3 = rope_back(dqr);
        ggml_tensor * dk3 = rope_back(dkr);
        done("attn");
        if (c_.qk_norm) {
            dq3 = norm_back(dq3, a.q3, l.q_norm);
            dk3 = norm_back(dk3, a.k3, l.k_norm);
            done("norm");
        }
        ggml_tensor * dq = ggml_reshape_2d(ctx_, dq3, hd * nh, T_);
        ggml_tensor * dk = ggml_reshape_2d(ctx_, dk3, hd * nkv, T_);
        ggml_tensor * dv = ggml_reshape_2d(ctx_, dv3, hd * nkv, T_);
        std::vector<ggml_tensor *> terms1;
        ggml_tensor * dh1 = projs_back(a.h1, {{l.wq, a.q, pair(il, LoraTarget::Q), dq}, {l.wk, a.k, pair(il, LoraTarget::K), dk}, {l.wv, a.v, pair(il, LoraTarget::V), dv}},
                                       LoraWhen::Later, fused_norm ? &terms1 : nullptr);
        done("W");
        ggml_tensor * dx = fused_norm ? norm_node(terms1, a.x, l.attn_norm, dx2) : ggml_add(ctx_, dx2, norm_back(dh1, a.x, l.attn_norm));
        done("norm");
        return dx;
    }

    // The attention backward in ggml's ops (GraphOptions::fused_attn_backward off): dQ, dK, dV
    // [hd, heads, T] from the attention output's gradient [hd * n_head, T].
    void attention_backward_ops(const LayerActs & a, ggml_tensor * d_attn, ggml_tensor ** dqr, ggml_tensor ** dkr, ggml_tensor ** dv3) {
        const int64_t hd = c_.head_dim, nh = c_.n_head, nkv = c_.n_head_kv;
        // Flash attention without recomputation kept no probabilities: built here, as late as possible.
        ggml_tensor * P = a.P ? a.P : attention_probs(a.qr, a.kr);
        ggml_tensor * dkqv = ggml_cont(ctx_, ggml_permute(ctx_, ggml_reshape_4d(ctx_, d_attn, hd, nh, L_, B_), 0, 2, 1, 3)); // [hd, L, nh, B]
        ggml_tensor * dP = ggml_mul_mat(ctx_, by_head(a.v3, nkv), dkqv);                                              // [L_k, L_q, nh, B]
        ggml_tensor * dS = ggml_soft_max_ext_back(ctx_, dP, P, kq_scale(), 0.0f);                   // d(kq)
        // The other three products contract over a dimension that is not the first. out_prod
        // contracts over the second and reads a transposed second operand in place (cuBLAS
        // transposes on the fly), where mul_mat needed transposed copies of P, dS, Q, K and dO:
        // about 0.6 GB written per layer at 16 x 512 tokens.
        //
        // dK and dV sum over the query heads of each K/V head's group as well as over queries.
        // The heads of a group are adjacent (head h reads K/V head h / grp), so in a contiguous
        // [x, L_q, n_head, B] tensor a group's (query, head) pairs are one run of L_q * grp rows:
        // viewed as [x, L_q * grp, n_head_kv, B], one out_prod contracts over both.
        const int64_t grp = nh / nkv;
        auto grouped = [&](ggml_tensor * t) { return ggml_reshape_4d(ctx_, t, t->ne[0], L_ * grp, nkv, B_); };
        ggml_tensor * Qp = by_head(a.qr, nh);
        ggml_tensor * Kp = by_head(a.kr, nkv);
        ggml_tensor * dV = ggml_out_prod(ctx_, grouped(dkqv), grouped(P));                          // Σ_q,g dO P -> [hd, L_k, nkv, B]
        ggml_tensor * dQ = ggml_out_prod(ctx_, Kp, ggml_transpose(ctx_, dS));                         // Σ_k K dS -> [hd, L_q, nh, B]
        // Q is a permuted view of the rotated queries: a contiguous copy makes its groups runs too.
        ggml_tensor * Qg = grp == 1 ? Qp : grouped(ggml_cont(ctx_, Qp));
        ggml_tensor * dK = ggml_out_prod(ctx_, Qg, grp == 1 ? dS : grouped(dS));                      // Σ_q,g Q dS -> [hd, L_k, nkv, B]
        auto unheads = [&](ggml_tensor * t) { return ggml_reshape_3d(ctx_, ggml_cont(ctx_, ggml_permute(ctx_, t, 0, 2, 1, 3)), hd, t->ne[2], T_); };
        *dqr = unheads(dQ);
        *dkr = unheads(dK);
        *dv3 = unheads(dV);
    }

    // The head and the loss's gradient at it as our node (loss_head.h): appends the rows'
    // log-probs to `lps`, returns dL/d(hf) (null without the backward pass).
    ggml_tensor * head_node(ggml_tensor * hf, int64_t chunk, bool backward, const LossSpec & loss, std::vector<ggml_tensor *> & lps) {
        LossHeadRows rows;
        rows.targets = on_device(in_.targets);
        if (backward) rows.neg_w = on_device(in_.neg_w);
        if (backward && loss.has_old) rows.old_lp = on_device(in_.old_lp);
        if (backward && loss.kl) {
            rows.kl_m = on_device(in_.kl_m);
            rows.ref_lp = on_device(in_.ref_lp);
        }
        const LossHeadSpec spec{backward, backward && loss.has_old, backward && loss.kl, loss.clip_eps};
        ggml_tensor * node = loss_head(ctx_, hf, w_.output, rows, spec, head_steps ? chunk : 0);
        // A copy for the output: a view would keep the node, work space and all, allocated
        // through the whole backward pass (outputs are never freed).
        ggml_tensor * lp = ggml_cont(ctx_, loss_head_lp(ctx_, node));
        ggml_set_output(lp);
        ggml_build_forward_expand(gf_, lp);
        lps.push_back(lp);
        return backward ? loss_head_dh(ctx_, node) : nullptr;
    }

    // The same in ggml's ops, chunk by chunk: each chunk's log-probs appended to `lps`.
    ggml_tensor * head_ops(ggml_tensor * hf, int64_t R, int64_t chunk, bool backward, const LossSpec & loss, std::vector<ggml_tensor *> & lps) {
        const int64_t V = c_.n_vocab;
        ggml_tensor * Wt_out = backward ? frozen_t(w_.output) : nullptr;
        done("Wt");
        ggml_tensor * dhf = nullptr;
        for (int64_t c0 = 0; c0 < R; c0 += chunk) {
            const int64_t n = std::min(chunk, R - c0);
            ggml_tensor * hc = ggml_view_2d(ctx_, hf, hf->ne[0], n, hf->nb[1], (size_t) c0 * hf->nb[1]);
            ggml_tensor * logits = ggml_mul_mat(ctx_, w_.output, hc); // [V, n]
            ggml_tensor * p = ggml_soft_max(ctx_, logits);
            ggml_tensor * pt = ggml_get_rows(ctx_, ggml_reshape_2d(ctx_, p, 1, V * n), ggml_view_1d(ctx_, on_device(in_.flat_idx), n, (size_t) c0 * sizeof(int32_t)));
            ggml_tensor * lp = ggml_log(ctx_, pt); // [1, n]
            ggml_set_output(lp);
            ggml_build_forward_expand(gf_, lp);
            lps.push_back(lp);
            if (!backward) continue;

            // coef = dL/d(log p of the target), treated as a constant: see train_step.h.
            ggml_tensor * coef = row_view(on_device(in_.neg_w), c0, n);
            if (loss.has_old) {
                ggml_tensor * rho = ggml_exp(ctx_, ggml_sub(ctx_, lp, row_view(on_device(in_.old_lp), c0, n)));
                ggml_tensor * u = ggml_mul(ctx_, rho, coef);
                ggml_tensor * cl = ggml_mul(ctx_, ggml_clamp(ctx_, rho, 1.0f - loss.clip_eps, 1.0f + loss.clip_eps), coef);
                // min(ρA, clip(ρ)A) takes the clipped branch, with zero gradient, where that is smaller.
                ggml_tensor * clipped = ggml_step(ctx_, ggml_sub(ctx_, cl, u));
                coef = ggml_sub(ctx_, u, ggml_mul(ctx_, u, clipped));
            }
            if (loss.kl) {
                ggml_tensor * km = row_view(on_device(in_.kl_m), c0, n);
                ggml_tensor * r = ggml_exp(ctx_, ggml_sub(ctx_, row_view(on_device(in_.ref_lp), c0, n), lp));
                coef = ggml_add(ctx_, coef, ggml_sub(ctx_, km, ggml_mul(ctx_, km, r)));
            }
            // d(log p_t)/d(logits) = onehot(t) - p, so dh = coef * (W_out[t] - W_outᵀ p): the onehot
            // part is the target's own output row, and coef scales whole columns, so it is applied
            // after the product, to n_embd numbers per row instead of n_vocab (on the CPU, scaling
            // p took 28% of a step of the tiny preset at 16 x 512 tokens).
            ggml_tensor * tgt_rows = ggml_get_rows(ctx_, w_.output, ggml_view_1d(ctx_, on_device(in_.targets), n, (size_t) c0 * sizeof(int32_t)));
            ggml_tensor * dh = ggml_mul(ctx_, ggml_sub(ctx_, tgt_rows, ggml_mul_mat(ctx_, Wt_out, p)), coef);
            ggml_build_forward_expand(gf_, dh);
            dhf = dhf ? ggml_concat(ctx_, dhf, dh, 1) : dh;
        }
        return dhf;
    }

    // The LM head over the loss rows in chunks. Returns the per-chunk log-prob tensors and, when
    // `backward`, dL/d(x_final) via *dx.
    std::vector<ggml_tensor *> head(ggml_tensor * x_final, int64_t R, int64_t chunk, bool backward, const LossSpec & loss,
                                    ggml_tensor ** dx) {
        const std::string saved = phase;
        phase = "head";
        ggml_tensor * xr = ggml_get_rows(ctx_, x_final, in_.rows);
        ggml_tensor * hf = norm_w(xr, w_.output_norm);
        done("Wt");
        std::vector<ggml_tensor *> lps;
        ggml_tensor * dhf = fused_head ? head_node(hf, chunk, backward, loss, lps) : head_ops(hf, R, chunk, backward, loss, lps);
        if (backward) {
            ggml_tensor * dxr = norm_back(dhf, xr, w_.output_norm);
            // The loss rows are distinct positions, so scattering them into zeros is the whole
            // backward of get_rows. CUDA's GET_ROWS_BACK scans every row for every output row:
            // 41 ms of a 792 ms step on an H100 (bench --train-profile), where this is a copy.
            *dx = ggml_set_rows(ctx_, ggml_fill(ctx_, x_final, 0.0f), dxr, in_.rows);
        }
        done(backward ? "loss" : "lp");
        phase = saved;
        return lps;
    }

private:
    ggml_context * ctx_;
    ggml_cgraph * gf_;
    const ModelWeights & w_;
    const ModelConfig & c_;
    LoraView lora_;
    const Inputs & in_;
    int64_t L_, B_, T_;
    ggml_tensor * mark_ = nullptr; // newest tensor already named
    std::unordered_map<const LoraPair *, ggml_tensor *> scaled_at_; // lora_delta's s Aᵀ per adapter pair
    std::unordered_map<const LoraPair *, ggml_tensor *> stacked_a_; // stacked_a() by its first pair
    std::unordered_map<const LoraPair *, ggml_tensor *> scaled_stacked_a_; // projs()'s s A, the same way
    std::unordered_map<const LoraPair *, ggml_tensor *> padded_b_;  // projs()'s padded B per pair
    std::unordered_map<const ggml_tensor *, ggml_tensor *> device_copies_; // on_device() by input
    struct Merged {
        ggml_tensor * w = nullptr, * wt = nullptr; // W + s B A, its transpose (either may be absent)
    };
    using MergedSet = std::unordered_map<const ggml_tensor *, Merged>; // by W
    MergedSet premerged_;                       // premerge()'s, for one layer's pass
    std::unordered_map<int64_t, MergedSet> ahead_; // merge_ahead()'s, by the layer they are for

    // A group's adapter gradient nodes (lora_back()), not yet in the graph or not yet summed.
    struct LoraGroup {
        std::vector<const LoraPair *> pairs;
        ggml_tensor * x = nullptr;
        std::vector<LoraBackTerm> terms; // each adapter's B and (contiguous) dy
        ggml_tensor * grads = nullptr; // made by flush_lora()
    };
    std::vector<LoraGroup> lora_pending_, lora_unadded_;

    // The nodes made since the last call were for `part` of the current phase.
    void done(const char * part) { mark_ = name_role(ctx_, mark_, phase + "." + part); }

    const LoraPair * pair(int64_t il, LoraTarget t) const { return lora_.pair(il, t); }
    float kq_scale() const { return 1.0f / std::sqrt((float) c_.head_dim); }

    // softmax(K Q / sqrt(hd) + causal mask) per head and sequence: [L_k, L_q, nh, B].
    // Grouped-query attention needs no copies of K and V per query head: mul_mat and out_prod
    // broadcast their first operand's heads, query head h reading K/V head h / (n_head / n_head_kv)
    // as the models do (the backward pass sums dK and dV over each group: layer_backward).
    ggml_tensor * attention_probs(ggml_tensor * qr, ggml_tensor * kr) {
        ggml_tensor * kq = ggml_mul_mat(ctx_, by_head(kr, c_.n_head_kv), by_head(qr, c_.n_head));
        ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
        return ggml_soft_max_ext(ctx_, kq, in_.mask, kq_scale(), 0.0f);
    }

    ggml_tensor * norm_w(ggml_tensor * x, ggml_tensor * weight) { return ggml_mul(ctx_, ggml_rms_norm(ctx_, x, c_.rms_eps), weight); }

    // resid + the norm's backward pass of the summed terms, as our node; terms past its limit are
    // summed first by ggml's ADD.
    ggml_tensor * norm_node(std::vector<ggml_tensor *> terms, ggml_tensor * x, ggml_tensor * weight, ggml_tensor * resid) {
        while ((int) terms.size() > kNormBackMaxTerms) {
            ggml_tensor * last = terms.back();
            terms.pop_back();
            terms.back() = ggml_add(ctx_, terms.back(), last);
        }
        return norm_backward(ctx_, terms, x, weight, resid, c_.rms_eps);
    }

    // d/dx of rms_norm(x) * weight, weight frozen.
    ggml_tensor * norm_back(ggml_tensor * dy, ggml_tensor * x, ggml_tensor * weight) {
        return ggml_rms_norm_back(ctx_, ggml_mul(ctx_, dy, weight), x, c_.rms_eps);
    }

    // Unmerged, the same op order as transformer.cpp's project(), so both graphs give the same
    // numbers; merged (GraphOptions::merge_adapter), the same up to the merged weight's rounding.
    // `xw`: x as the frozen product reads it (product_input()), x itself when nullptr.
    // `out16`: y by our node (product16.h) in W's (merged W's) 16-bit type, xw given in that type.
    Proj proj(ggml_tensor * W, ggml_tensor * x, const LoraPair * p, ggml_tensor * bias, ggml_tensor * xw = nullptr, bool out16 = false) {
        if (!xw) xw = x;
        Proj r;
        if (merged && p) {
            if (dropout > 0) throw Error("mergeAdapter cannot merge an adapter trained with dropout: its input differs from W's");
            // r.a stays empty: the backward pass makes s A x itself (projs_back).
            ggml_tensor * Wm = nullptr;
            const auto pm = premerged_.find(W);
            if (pm != premerged_.end() && pm->second.w) {
                Wm = pm->second.w;
                r.wt = pm->second.wt;
            } else {
                Wm = merged_weight(W, lora_delta(p, false));
            }
            done("lora");
            // The backward pass follows a recomputed layer at once, so its merged weight lives on
            // briefly and gives the backward's (W + s B A)ᵀ by one transposing copy, where W
            // transposed per step would take that copy and a merge again (s Aᵀ Bᵀ, then the add):
            // 12 of the 16 bytes a weight's number costs. With the transposes kept, Wᵀ is
            // free and merging it is cheaper than the copy.
            if (phase == "re" && !transposed && !r.wt) r.wm = Wm;
            r.y = out16 ? product16(ctx_, Wm, xw) : ggml_mul_mat(ctx_, Wm, xw);
            if (bias) r.y = ggml_add(ctx_, r.y, bias);
            done("W");
            return r;
        }
        if (out16 && p) throw Error("internal error: a 16-bit product of an unmerged adapter");
        r.y = out16 ? product16(ctx_, W, xw) : ggml_mul_mat(ctx_, W, xw);
        done("W");
        if (p) {
            r.a = adapter_a(p, x);
            r.y = ggml_add(ctx_, r.y, ggml_mul_mat(ctx_, p->b, r.a));
            done("lora");
        }
        if (bias) r.y = ggml_add(ctx_, r.y, bias);
        done("W");
        return r;
    }

    struct Fwd {
        ggml_tensor * W;
        const LoraPair * p;
        ggml_tensor * bias;
    };

    // Projections that read the same x (q, k and v; gate and up; o and down alone). Where
    // GraphOptions::fuse_adapter says so, each adapted one is one product over the input extended
    // by the adapters' s A x rows, [W | B] [x ; s A x], so B (s A x) is summed inside W's product
    // instead of written n_out wide and added (fused()); otherwise proj() each.
    // With `out16` (gate_up_type()), the products are our node writing that type, x cast to it once.
    std::vector<Proj> projs(ggml_tensor * x, std::initializer_list<Fwd> fs, ggml_type out16 = GGML_TYPE_F32) {
        std::vector<const Fwd *> adapted;
        for (const Fwd & f : fs) {
            if (f.p) adapted.push_back(&f);
        }
        std::vector<Proj> out;
        const ggml_type it = product_input(fs);
        if (out16 != GGML_TYPE_F32) {
            ggml_tensor * xw = ggml_cast(ctx_, x, out16);
            for (const Fwd & f : fs) out.push_back(proj(f.W, x, f.p, f.bias, xw, true));
            return out;
        }
        if (merged || !fused(x, adapted, it)) {
            // One cast for all the products that read x, where each would convert it for itself
            // (GraphOptions::share_input_cast).
            ggml_tensor * xw = share_cast && it != GGML_TYPE_F32 && fs.size() > 1 ? ggml_cast(ctx_, x, it) : x;
            for (const Fwd & f : fs) out.push_back(proj(f.W, x, f.p, f.bias, xw));
            return out;
        }
        const int64_t r = adapted[0]->p->a->ne[1], k = (int64_t) adapted.size();
        ggml_tensor * a = nullptr; // s A x of every adapter, [r * k, T]
        if (dropout > 0) {
            for (const Fwd * f : adapted) {
                ggml_tensor * aj = adapter_a(f->p, x);
                a = a ? ggml_concat(ctx_, a, aj, 0) : aj;
            }
        } else {
            std::vector<const LoraPair *> ps;
            for (const Fwd * f : adapted) ps.push_back(f->p);
            // s on the stacked A, made once per graph, not on s A x in every pass
            ggml_tensor *& sA = scaled_stacked_a_[ps[0]];
            if (!sA) sA = ggml_scale(ctx_, stacked_a(ps), train_scale());
            a = ggml_mul_mat(ctx_, sA, x);
        }
        // [n_in + r * k, T], in the products' input type: cast, x would be converted in every product
        ggml_tensor * xw = it == GGML_TYPE_F32 ? x : ggml_cast(ctx_, x, it);
        ggml_tensor * xa = ggml_concat(ctx_, xw, it == GGML_TYPE_F32 ? a : ggml_cast(ctx_, a, it), 0);
        done("lora");
        int64_t slot = 0;
        for (const Fwd & f : fs) {
            Proj pr;
            if (!f.p) {
                pr.y = ggml_mul_mat(ctx_, f.W, xw);
            } else {
                pr.a = ggml_view_2d(ctx_, a, r, a->ne[1], a->nb[1], (size_t) (slot * r) * a->nb[0]);
                // B in its adapter's rows, zeros in the others', rounded to W's type: made once
                // per graph, for the forward and the recomputed pass.
                ggml_tensor *& Bp = padded_b_[f.p];
                if (!Bp) {
                    Bp = ggml_pad_ext(ctx_, f.p->b, (int) (slot * r), (int) ((k - 1 - slot) * r), 0, 0, 0, 0, 0, 0);
                    if (Bp->type != f.W->type) Bp = ggml_cast(ctx_, Bp, f.W->type);
                }
                ggml_tensor * WB = ggml_concat(ctx_, f.W, Bp, 0); // [n_in + r * k, n_out]
                done("lora");
                pr.y = ggml_mul_mat(ctx_, WB, xa);
                ++slot;
            }
            if (f.bias) pr.y = ggml_add(ctx_, pr.y, f.bias);
            done("W");
            out.push_back(pr);
        }
        return out;
    }

    // The type the frozen products of a group read their shared input in: f16 or bf16 where all
    // their weights (merged: the merged weights) are of that type, and f32 (as it is) otherwise.
    // A 16-bit product converts an f32 input to its type itself, ggml-cpu and cuBLAS alike, so
    // casting it once gives the same numbers, converted once for the group.
    ggml_type product_input(std::initializer_list<Fwd> fs) const {
        ggml_type t = GGML_TYPE_COUNT;
        for (const Fwd & f : fs) {
            const ggml_type ft = merged && f.p ? merged_type(f.W) : f.W->type;
            if (t != GGML_TYPE_COUNT && ft != t) return GGML_TYPE_F32;
            t = ft;
        }
        return is16(t) ? t : GGML_TYPE_F32;
    }

    // Whether a projection can read its input in f16 as it is: an f16 product (merged, an f16
    // weight) with no adapter path, whose A and the gradient products take f32 inputs.
    bool reads_f16(ggml_tensor * W, const LoraPair * p) const {
        return product_input({{W, p, nullptr}}) == GGML_TYPE_F16 && (!p || merged);
    }

    // Whether projs() fuses these adapters into their weights' products: where the weights can be
    // extended in their own type (f32, f16, bf16) and, by bytes (2), where it moves fewer.
    // Fused, x is copied once with the adapters' rows (in the products' input type `it`) and each
    // W once with its B (both n_in wide); the adapter path writes each B (s A x), n_out x T in
    // f32, and adds it (three passes more).
    bool fused(const ggml_tensor * x, const std::vector<const Fwd *> & adapted, ggml_type it) const {
        if (fuse == 0 || adapted.empty()) return false;
        for (const Fwd * f : adapted) {
            if (f->W->type != GGML_TYPE_F32 && f->W->type != GGML_TYPE_F16 && f->W->type != GGML_TYPE_BF16) return false;
        }
        if (fuse == 1) return true;
        const double n_in = (double) x->ne[0], T = (double) x->ne[1], rk = (double) (adapted[0]->p->a->ne[1] * (int64_t) adapted.size());
        double path = 0, joined = 2.0 * (double) ggml_type_size(it) * T * (n_in + rk);
        for (const Fwd * f : adapted) {
            const double n_out = (double) f->W->ne[1];
            path += 16.0 * T * n_out;
            joined += 2.0 * (double) ggml_type_size(f->W->type) * n_in * n_out;
        }
        return joined < path;
    }

    // Wᵀ as a contiguous matrix [n_out, n_in] that mul_mat accepts on every backend.
    ggml_tensor * frozen_t(ggml_tensor * W) {
        if (ggml_tensor * kept = transposed ? transposed->find(W) : nullptr) return kept;
        if (transposed_type(W) == W->type) return ggml_cont(ctx_, ggml_transpose(ctx_, W));
        ggml_tensor * deq = ggml_get_rows(ctx_, W, ggml_view_1d(ctx_, on_device(in_.iota), W->ne[1], 0)); // f32 [n_in, n_out]
        return ggml_cast(ctx_, ggml_transpose(ctx_, deq), transposed_type(W));
    }

    // The adapter's scale in a training pass: dropout keeps a share 1 - p of A's inputs, so the
    // kept ones count 1 / (1 - p) (inverted dropout, as PEFT's nn.Dropout).
    float train_scale() const { return lora_.scale / (1.0f - dropout); }

    struct Dropped {
        ggml_tensor * x;    // the adapter's input with the dropped values zeroed
        ggml_tensor * mask; // 1 where kept, 0 where dropped
    };
    // The mask is 1 where sin(u_i v_t) > cos(pi (1 - p)), u_i and v_t the inputs' random factors
    // for this adapter's input value i and token t. Their product spans many periods, so the
    // phase is uniform, and P(sin > cos(pi q)) = q, the share kept (a million draws of the
    // formula kept 0.7005 at p = 0.3, and both of two neighbouring tokens 0.4908 against 0.49). Made again, the same ops
    // give the same mask: recomputed layers and the backward pass need nothing kept.
    Dropped dropped(ggml_tensor * x, const LoraPair * p) {
        const int64_t site = site_of(p);
        ggml_tensor * u = ggml_view_2d(ctx_, on_device(in_.drop_u), x->ne[0], 1, in_.drop_u->nb[1], (size_t) site * in_.drop_u->nb[1]);
        ggml_tensor * phase = ggml_out_prod(ctx_, u, ggml_reshape_2d(ctx_, on_device(in_.drop_v), T_, 1)); // [n_in, T]
        const float c = std::cos(3.14159265358979f * (1.0f - dropout));
        ggml_tensor * mask = ggml_step(ctx_, ggml_scale_bias(ctx_, ggml_sin(ctx_, phase), 1.0f, -c));
        return Dropped{ggml_mul(ctx_, x, mask), mask};
    }

    // The A of adapters that read the same input side by side, [n_in, r * k]: made once per graph
    // (a group's first pair names it) for the forward, recomputed and backward passes.
    ggml_tensor * stacked_a(const std::vector<const LoraPair *> & ps) {
        ggml_tensor *& A = stacked_a_[ps[0]];
        if (A) return A;
        if (ps.size() == 1) return A = ps[0]->a;
        // The adapter lays a layer's A side by side (adapter.cpp): the stack is then a view of
        // its memory. A gap (the backend's alignment past an odd-sized A) takes a concatenation.
        std::vector<const ggml_tensor *> as;
        for (const LoraPair * p : ps) as.push_back(p->a);
        if ((A = side_by_side(as, lora_.whole))) return A;
        for (const LoraPair * p : ps) A = A ? ggml_concat(ctx_, A, p->a, 1) : p->a;
        return A;
    }

    // Matrices [n, m_i] that lie one after another in `whole`'s memory, as one [n, Σ m_i] view of
    // it; null where any gap or other row length parts them (or without `whole`).
    ggml_tensor * side_by_side(const std::vector<const ggml_tensor *> & ts, ggml_tensor * whole) const {
        if (!whole || !whole->data) return nullptr;
        int64_t cols = 0;
        for (size_t i = 0; i < ts.size(); ++i) {
            if (!ts[i]->data || ts[i]->ne[0] != ts[0]->ne[0]) return nullptr;
            if (i > 0 && (const char *) ts[i]->data != (const char *) ts[i - 1]->data + ggml_nbytes(ts[i - 1])) return nullptr;
            cols += ts[i]->ne[1];
        }
        const size_t offset = (size_t) ((const char *) ts[0]->data - (const char *) whole->data);
        return ggml_view_2d(ctx_, whole, ts[0]->ne[0], cols, ts[0]->nb[1], offset);
    }

    // Which (layer, projection) an adapter pair is: its column of the dropout factors.
    int64_t site_of(const LoraPair * p) const {
        for (int64_t il = 0; il < c_.n_layer; ++il) {
            for (size_t t = 0; t < kLoraTargets; ++t) {
                if (lora_.pair(il, (LoraTarget) t) == p) return il * (int64_t) kLoraTargets + (int64_t) t;
            }
        }
        throw Error("internal error: an adapter pair outside the adapter");
    }

    // s B A laid out as W ([n_in, n_out]), or as Wᵀ with `transposed_layout`; s goes on A, the small side.
    // s Aᵀ is made once per graph and shared by the forward, recomputed and backward merges.
    ggml_tensor * lora_delta(const LoraPair * p, bool transposed_layout) {
        ggml_tensor *& At = scaled_at_[p];
        if (!At) At = ggml_scale(ctx_, ggml_cont(ctx_, ggml_transpose(ctx_, p->a)), lora_.scale); // [r, n_in]
        return transposed_layout ? ggml_mul_mat(ctx_, p->b, At) : ggml_mul_mat(ctx_, At, p->b);
    }

    // GraphOptions::fused_merge: the layer's merged weights (or transposes, `out`) by our node,
    // one per adapted projection of a type it takes, put in the graph one after another so that
    // on a GPU they run as one piece beside ggml-cuda's. With `acts`, only for the projections
    // whose forward pass left no transpose (Proj::wt).
    // Merges made ahead for this layer (merge_ahead) serve instead.
    void premerge(int64_t il, MergeOut out, const LayerActs * acts) {
        const auto it = ahead_.find(il);
        if (it != ahead_.end()) {
            premerged_ = std::move(it->second);
            ahead_.erase(it);
            return;
        }
        premerged_ = make_merges(il, out, acts);
    }

    // A layer's merges put in the graph now, beside other nodes of ours, so that a GPU runs them
    // in the same piece of our backend: the layer's premerge() then takes them.
    void merge_ahead(int64_t il, MergeOut out) { ahead_[il] = make_merges(il, out, nullptr); }

    MergedSet make_merges(int64_t il, MergeOut out, const LayerActs * acts) {
        MergedSet set;
        const Proj * made[kLoraTargets] = {};
        if (acts) {
            const Proj * ps[kLoraTargets] = {&acts->q, &acts->k, &acts->v, &acts->o, &acts->g, &acts->u, &acts->d};
            std::copy(ps, ps + kLoraTargets, made);
        }
        for (size_t t = 0; t < kLoraTargets; ++t) {
            const LoraPair * p = pair(il, (LoraTarget) t);
            ggml_tensor * W = Adapter::base_weight(w_, il, (LoraTarget) t);
            if (!p || !lora_merge_supports(W->type) || (made[t] && made[t]->wt)) continue;
            ggml_tensor * node = lora_merge(ctx_, W, p->a, p->b, lora_.scale, out, merged_type(W));
            ggml_build_forward_expand(gf_, node);
            Merged m;
            if (out != MergeOut::Transposed) m.w = lora_merge_part(ctx_, node, MergeOut::Weight);
            if (out != MergeOut::Weight) m.wt = lora_merge_part(ctx_, node, MergeOut::Transposed);
            set[W] = m;
        }
        done("lora");
        return set;
    }

    // The type W + s B A is merged into: W's for f32 weights; for 16-bit and quantized ones bf16
    // with GraphOptions::merge_bf16, else W's (f16 for quantized ones).
    ggml_type merged_type(const ggml_tensor * W) const {
        if (W->type == GGML_TYPE_F32) return GGML_TYPE_F32;
        if (merge_bf16) return GGML_TYPE_BF16;
        return ggml_is_quantized(W->type) ? GGML_TYPE_F16 : W->type;
    }

    // W + delta in merged_type(W). ggml-cuda adds only f32 and f16, so other merges go through
    // f32, and quantized weights are dequantised (get_rows) first.
    ggml_tensor * merged_weight(ggml_tensor * W, ggml_tensor * delta) {
        const ggml_type to = merged_type(W);
        if (W->type == to && (to == GGML_TYPE_F32 || to == GGML_TYPE_F16)) return ggml_add(ctx_, W, delta);
        ggml_tensor * w32 = !ggml_is_quantized(W->type) ? ggml_cast(ctx_, W, GGML_TYPE_F32)
                                                        : ggml_get_rows(ctx_, W, ggml_view_1d(ctx_, on_device(in_.iota), W->ne[1], 0));
        return ggml_cast(ctx_, ggml_add(ctx_, w32, delta), to);
    }

    // One projection y = W x + B (s A x) (+ bias) to take back through: its output gradient dy.
    struct Back {
        ggml_tensor * W;
        const Proj & p;
        const LoraPair * pr;
        ggml_tensor * dy;
        ggml_tensor * dyw = nullptr; // dy rounded to the dx product's type, where made; dy otherwise
        ggml_tensor * dy_w() const { return dyw ? dyw : dy; }
    };

    // The type of the weight a projection's dx product multiplies (Part::Wt): the merged
    // transpose's, a kept transpose's, or one made per step.
    ggml_type dx_type(ggml_tensor * W, const LoraPair * p) const {
        if (merged && p) return merged_type(W);
        if (ggml_tensor * kept = transposed ? transposed->find(W) : nullptr) return kept->type;
        return transposed_type(W);
    }

    // Backward of projections that read the same x (q, k and v; gate and up): returns dx,
    // accumulates each adapter's dA and dB. Their adapters' A are stacked, so x is read once for
    // all of them where the adapter's input product (s A x) or dA needs it, and without merging
    // their dx terms Σ Aᵢᵀ daᵢ come from one product. That product is fused into one frozen
    // product where GraphOptions::fuse_adapter says so (fused_back()): [Wᵀ | Aᵀ] [dy ; da].
    // With `terms`, the dx terms come back there, unsummed (for norm_backward), and it returns null.
    // With `out16`, one merged projection's dx comes from our node in that type (product16.h).
    ggml_tensor * projs_back(ggml_tensor * x, std::initializer_list<Back> projs, LoraWhen when = LoraWhen::Now, std::vector<ggml_tensor *> * terms = nullptr,
                             ggml_type out16 = GGML_TYPE_F32) {
        done("W"); // what the caller made before
        std::vector<const Back *> adapted;
        for (const Back & b : projs) {
            if (b.pr) adapted.push_back(&b);
        }
        if (lora_nodes && !adapted.empty()) {
            lora_back(x, adapted);
            if (when == LoraWhen::Now) {
                prepare_lora({});
                flush_lora();
            }
            adapted.clear(); // merged: dx needs nothing from the adapters
        }
        // The adapters first: a fused dx product needs their da.
        std::vector<ggml_tensor *> dx_lora; // the adapters' dx terms, unless merged or fused
        ggml_tensor * At = nullptr, * da = nullptr; // unmerged, undropped: Σ Aᵢᵀ daᵢ is At da
        if (!adapted.empty() && dropout > 0) {
            // Each adapter read x through its own mask: nothing to share.
            for (const Back * b : adapted) {
                const Dropped xd = dropped(x, b->pr);
                accumulate(b->pr->b, ggml_out_prod(ctx_, b->p.a, b->dy));
                ggml_tensor * dai = adapter_da(*b);
                accumulate(b->pr->a, ggml_out_prod(ctx_, xd.x, dai));
                dx_lora.push_back(ggml_mul(ctx_, ggml_mul_mat(ctx_, ggml_cont(ctx_, ggml_transpose(ctx_, b->pr->a)), dai), xd.mask));
            }
            done("lora");
        } else if (!adapted.empty()) {
            const int64_t r = adapted[0]->pr->a->ne[1];
            std::vector<const LoraPair *> ps;
            for (const Back * b : adapted) ps.push_back(b->pr);
            ggml_tensor * A = stacked_a(ps); // [n_in, r * adapters]
            // s A x, each adapter's rows of it (kept from the forward pass unless merged).
            ggml_tensor * ax = nullptr;
            const auto a_of = [&](size_t i) {
                if (adapted[i]->p.a) return adapted[i]->p.a;
                if (!ax) ax = ggml_scale(ctx_, ggml_mul_mat(ctx_, A, x), train_scale());
                return ggml_view_2d(ctx_, ax, r, ax->ne[1], ax->nb[1], (size_t) i * r * ax->nb[0]);
            };
            for (size_t i = 0; i < adapted.size(); ++i) {
                const Back & b = *adapted[i];
                accumulate(b.pr->b, ggml_out_prod(ctx_, a_of(i), b.dy)); // dB: [r, n_out]
                ggml_tensor * dai = adapter_da(b);
                da = da ? ggml_concat(ctx_, da, dai, 0) : dai; // [r * adapters, T]
            }
            ggml_tensor * dA = ggml_out_prod(ctx_, x, da); // [n_in, r * adapters]
            for (size_t i = 0; i < adapted.size(); ++i) {
                accumulate(adapted[i]->pr->a, ggml_view_2d(ctx_, dA, dA->ne[0], r, dA->nb[1], (size_t) i * r * dA->nb[1]));
            }
            if (!merged) At = ggml_cont(ctx_, ggml_transpose(ctx_, A)); // [r * adapters, n_in]
            done("lora");
        }
        std::vector<Part> parts; // each projection's Wᵀ (merged: (W + s B A)ᵀ) and dy
        for (const Back & b : projs) {
            const auto pm = premerged_.find(b.W);
            ggml_tensor * wt = b.p.wt ? b.p.wt : merged && b.pr && pm != premerged_.end() ? pm->second.wt : nullptr;
            if (wt) {
                parts.push_back({wt, b.dy_w()});
                continue;
            }
            if (b.p.wm) {
                parts.push_back({ggml_cont(ctx_, ggml_transpose(ctx_, b.p.wm)), b.dy_w()});
                done("Wt");
                continue;
            }
            ggml_tensor * Wt = frozen_t(b.W);
            done("Wt");
            if (merged && b.pr) {
                // dx = (W + s B A)ᵀ dy in one product, so no n_in x tokens adapter term to add.
                Wt = merged_weight(Wt, lora_delta(b.pr, true));
                done("lora");
            }
            parts.push_back({Wt, b.dy_w()});
        }
        if (out16 != GGML_TYPE_F32) {
            if (parts.size() != 1 || At || terms || !dx_lora.empty() || parts[0].Wt->type != out16) throw Error("internal error: a 16-bit dx product of more than one merged weight");
            ggml_tensor * dy = parts[0].dy->type == out16 ? parts[0].dy : ggml_cast(ctx_, parts[0].dy, out16);
            // in the graph now, among ggml's ops, where made on first use it would split a run of ours
            ggml_build_forward_expand(gf_, dy);
            ggml_tensor * dx16 = product16(ctx_, parts[0].Wt, dy); // Wtᵀ dy = (W + s B A) dy
            done("W");
            return dx16;
        }
        ggml_tensor * dx = nullptr;
        const auto add_term = [&](ggml_tensor * d) {
            if (terms) terms->push_back(d);
            else dx = dx ? ggml_add(ctx_, dx, d) : d;
        };
        if (joined_back(x, parts, At ? At->ne[0] : 0)) {
            if (At) parts.push_back({At, da});
            add_term(joined_product(parts, "W"));
            done("W");
        } else {
            const Back * carrier = At ? fused_back(x, adapted, At->ne[0]) : nullptr; // the product that takes in At da
            if (At && !carrier) {
                dx_lora.push_back(ggml_mul_mat(ctx_, At, da));
                done("lora");
            }
            size_t i = 0;
            for (const Back & b : projs) {
                const Part & p = parts[i++];
                add_term(&b == carrier ? joined_product({p, {At, da}}, "lora") : ggml_mul_mat(ctx_, p.Wt, p.dy));
                done("W");
            }
        }
        for (ggml_tensor * t : dx_lora) add_term(t);
        done("lora");
        return dx;
    }

    // The adapters' gradient nodes of a group (GraphOptions::fused_lora_backward), made now and
    // left out of the graph until flush_lora(): where they go decides whether our nodes on a
    // GPU share a run (each run costs the host two waits on the device).
    void lora_back(ggml_tensor * x, const std::vector<const Back *> & adapted) {
        LoraGroup g;
        g.x = x;
        for (const Back * b : adapted) {
            g.pairs.push_back(b->pr);
            g.terms.push_back({b->pr->b, ggml_is_contiguous(b->dy) ? b->dy : ggml_cont(ctx_, b->dy)});
        }
        done("lora");
        lora_pending_.push_back(std::move(g));
    }

    static bool of_ours(const ggml_tensor * t) { return t->op == GGML_OP_CUSTOM || (t->view_src && t->view_src->op == GGML_OP_CUSTOM); }

    // The layer's stacked A (q, k, v; gate, up) made among ggml's ops at the start of its
    // backward, where made on first use they would split a run of our nodes.
    void stack_layer_a(int64_t il) {
        for (std::initializer_list<LoraTarget> group : {std::initializer_list<LoraTarget>{LoraTarget::Q, LoraTarget::K, LoraTarget::V}, {LoraTarget::Gate, LoraTarget::Up}}) {
            std::vector<const LoraPair *> ps;
            for (LoraTarget t : group) {
                if (pair(il, t)) ps.push_back(pair(il, t));
            }
            if (ps.size() > 1) ggml_build_forward_expand(gf_, stacked_a(ps));
        }
        done("lora");
    }

    // What the pending nodes read and `next` (the inputs of the node of ours that follows) into
    // the graph, ahead of the run: all made by ggml's ops, but for what our nodes make.
    void prepare_lora(std::initializer_list<ggml_tensor *> next) {
        for (const LoraGroup & g : lora_pending_) {
            if (!of_ours(g.x)) ggml_build_forward_expand(gf_, g.x);
            ggml_build_forward_expand(gf_, stacked_a(g.pairs));
            for (const LoraBackTerm & t : g.terms) {
                if (!of_ours(t.dy)) ggml_build_forward_expand(gf_, t.dy);
            }
        }
        for (ggml_tensor * t : next) ggml_build_forward_expand(gf_, t);
    }

    // The pending nodes, made and put in the graph.
    void flush_lora() {
        for (LoraGroup & g : lora_pending_) {
            ggml_tensor * rows = lora_back_rows(ctx_, g.x, stacked_a(g.pairs), g.terms, train_scale());
            if (ggml_tensor * dA = stacked_grad_a(g.pairs)) {
                // The group's dA lie side by side in the gradient buffers as their A do in the
                // adapter's: the node sums into them itself, no adds after the run.
                std::vector<ggml_tensor *> dB;
                for (const LoraPair * p : g.pairs) dB.push_back(grad_buffer(p->b));
                ggml_build_forward_expand(gf_, lora_back_grads_into(ctx_, rows, dA, dB));
                continue;
            }
            g.grads = lora_back_grads(ctx_, rows);
            ggml_build_forward_expand(gf_, g.grads);
            lora_unadded_.push_back(std::move(g));
        }
        lora_pending_.clear();
        done("lora");
    }

    // The group's dA buffers as one [n_in, r·k] view of the flat gradients where they lie side
    // by side (as stacked_a's A do), else null.
    ggml_tensor * stacked_grad_a(const std::vector<const LoraPair *> & ps) const {
        std::vector<const ggml_tensor *> d;
        for (const LoraPair * p : ps) d.push_back(grad_buffer(p->a));
        return side_by_side(d, grads_whole);
    }

    // The flushed groups' sums into the gradient buffers, once the run of ours is over.
    void add_lora() {
        for (const LoraGroup & g : lora_unadded_) {
            for (size_t i = 0; i < g.pairs.size(); ++i) {
                accumulate(g.pairs[i]->a, lora_back_grad_a(ctx_, g.grads, (int64_t) i));
                accumulate(g.pairs[i]->b, lora_back_grad_b(ctx_, g.grads, (int64_t) i));
            }
        }
        lora_unadded_.clear();
        done("lora");
    }

public:
    // What is still pending at the end of the backward pass (layer 0's q, k and v).
    void finish_lora() {
        if (!lora_nodes) return;
        prepare_lora({});
        flush_lora();
        add_lora();
    }

private:
    // A product's transposed weight (or At) and the gradient it multiplies.
    struct Part {
        ggml_tensor * Wt; // [n_out, n_in]
        ggml_tensor * dy; // [n_out, T]
    };

    // Σ Wᵢᵀ dyᵢ as one product, [W₁ᵀ | W₂ᵀ | …] [dy₁ ; dy₂ ; …], the dys in the weights' type
    // (a 16-bit product would convert them itself). Smallest first: each concat rewrites what
    // came before it. The copies are named `copies_role`, the product is left to the caller.
    ggml_tensor * joined_product(std::vector<Part> parts, const char * copies_role) {
        std::stable_sort(parts.begin(), parts.end(), [](const Part & a, const Part & b) { return a.dy->ne[0] < b.dy->ne[0]; });
        ggml_type t = GGML_TYPE_F32; // the frozen weights' type (At is f32)
        for (const Part & p : parts) {
            if (p.Wt->type != GGML_TYPE_F32) t = p.Wt->type;
        }
        ggml_tensor * W = nullptr, * D = nullptr;
        for (const Part & p : parts) {
            ggml_tensor * w = p.Wt->type == t ? p.Wt : ggml_cast(ctx_, p.Wt, t);
            ggml_tensor * d = p.dy->type == t ? p.dy : ggml_cast(ctx_, p.dy, t);
            W = W ? ggml_concat(ctx_, W, w, 0) : w;
            D = D ? ggml_concat(ctx_, D, d, 0) : d;
        }
        done(copies_role);
        return ggml_mul_mat(ctx_, W, D);
    }

    // Whether projs_back() takes a group's whole dx from one product, [W₁ᵀ | W₂ᵀ | … | Aᵀ] [dy₁ ;
    // dy₂ ; … ; da] (joined_product), where each product would write its own n_in x tokens result
    // and add it (four passes each). Only with GraphOptions::fuse_adapter: 1 wherever the weights
    // share a type, 2 where the copies of the dys and Wᵀs side by side move fewer bytes.
    bool joined_back(const ggml_tensor * x, const std::vector<Part> & parts, int64_t rk) const {
        if (fuse == 0 || parts.size() < 2) return false;
        const ggml_type t = parts[0].Wt->type;
        if (t != GGML_TYPE_F32 && t != GGML_TYPE_F16 && t != GGML_TYPE_BF16) return false;
        double rows = (double) rk;
        for (const Part & p : parts) {
            if (p.Wt->type != t) return false;
            rows += (double) p.Wt->ne[0];
        }
        if (fuse == 1) return true;
        const double n_in = (double) x->ne[0], T = (double) x->ne[1], ts = (double) ggml_type_size(t);
        // each concat reads and writes what came before: about every row twice, read and written
        const double copies = 4.0 * ts * rows * (T + n_in);
        return copies < 16.0 * T * n_in * (double) (parts.size() - 1);
    }

    // Which adapted projection's dx product also takes in the adapters' Σ Aᵢᵀ daᵢ, as
    // [Wᵀ | Aᵀ] [dy ; da] (nullptr: none). The one with the fewest outputs: it copies its dy and
    // its Wᵀ with the adapters' rows (both in Wᵀ's type), where a product of its own writes dx and
    // adds it (four n_in x tokens passes). By bytes (2), only where the copies are the smaller.
    const Back * fused_back(const ggml_tensor * x, const std::vector<const Back *> & adapted, int64_t rk) const {
        if (fuse == 0) return nullptr;
        const Back * c = adapted[0];
        for (const Back * b : adapted) {
            if (b->W->ne[1] < c->W->ne[1]) c = b;
        }
        if (fuse == 1) return c;
        const double n_in = (double) x->ne[0], T = (double) x->ne[1], n_out = (double) c->W->ne[1];
        const double ts = (double) ggml_type_size(transposed_type(c->W));
        return 2.0 * ts * T * (n_out + (double) rk) + 2.0 * ts * n_in * n_out < 16.0 * T * n_in ? c : nullptr;
    }

    // s A x of one adapter, through its dropout mask when training with dropout: [r, T].
    ggml_tensor * adapter_a(const LoraPair * p, ggml_tensor * x) {
        return ggml_scale(ctx_, ggml_mul_mat(ctx_, p->a, dropout > 0 ? dropped(x, p).x : x), train_scale());
    }

    // dL/d(s A x) of one projection's adapter: s Bᵀ dy, [r, T].
    ggml_tensor * adapter_da(const Back & b) {
        return ggml_scale(ctx_, ggml_mul_mat(ctx_, ggml_cont(ctx_, ggml_transpose(ctx_, b.pr->b)), b.dy), train_scale());
    }

    ggml_tensor * grad_buffer(const ggml_tensor * param) const {
        auto it = grad_of.find(param);
        if (it == grad_of.end()) throw Error(std::string("internal error: no gradient buffer for ") + param->name);
        return it->second;
    }

    void accumulate(const ggml_tensor * param, ggml_tensor * d) {
        // In place: the sum is written straight into the gradient buffer, one op instead of an add
        // and a copy back.
        ggml_build_forward_expand(gf_, ggml_add_inplace(ctx_, grad_buffer(param), d));
    }

    ggml_tensor * rope(ggml_tensor * t) {
        return ggml_rope_ext(ctx_, t, in_.positions, w_.rope_freqs, (int) c_.n_rot, c_.rope_mode, (int) c_.n_ctx_train, c_.rope_base,
                             c_.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
    }
    ggml_tensor * rope_back(ggml_tensor * d) {
        return ggml_rope_ext_back(ctx_, d, in_.positions, w_.rope_freqs, (int) c_.n_rot, c_.rope_mode, (int) c_.n_ctx_train, c_.rope_base,
                                  c_.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
    }

    ggml_tensor * heads4(ggml_tensor * t, int64_t heads) { return ggml_reshape_4d(ctx_, t, c_.head_dim, heads, L_, B_); }
    // [hd, L, heads, B]: a head's positions as rows, a view
    ggml_tensor * by_head(ggml_tensor * t, int64_t heads) { return ggml_permute(ctx_, heads4(t, heads), 0, 2, 1, 3); }

    // A host input that kernels read through views, copied once per graph. A GPU's scheduler
    // copies each view of a host input on its own, a bus transfer each, and cuts the graph in two
    // past 30 of them (GGML_SCHED_MAX_SPLIT_INPUTS); views of this copy are views of device memory.
    ggml_tensor * on_device(ggml_tensor * input) {
        ggml_tensor *& copy = device_copies_[input];
        if (!copy) copy = ggml_cont(ctx_, input);
        return copy;
    }

    ggml_tensor * row_view(ggml_tensor * v, int64_t c0, int64_t n) {
        return ggml_view_2d(ctx_, v, 1, n, sizeof(float), (size_t) c0 * sizeof(float));
    }
};

size_t train_graph_size(int64_t n_layer, int64_t n_chunks) { return (size_t) (480 * n_layer + 48 * n_chunks + 1024); }

bool needs_dequant(const ModelWeights & w) {
    const std::vector<ggml_tensor *> fw = frozen_weights(w);
    return std::any_of(fw.begin(), fw.end(), [](const ggml_tensor * t) { return transposed_type(t) != t->type; });
}

int64_t chunk_rows_for(const ModelConfig & c, const GraphOptions & opt, int64_t R) {
    int64_t chunk = opt.chunk_rows > 0 ? opt.chunk_rows : std::max<int64_t>(1, kChunkLogits / c.n_vocab);
    // At most kMaxHeadChunks chunks a pass: each pins its log-probs (an output) between the
    // buffers freed around it, and ggml's allocator aborts the process past 256 free blocks
    // (MAX_FREE_BLOCKS): 512 one-row chunks did, and so did 64 x 2048 rows at the default size.
    chunk = std::max(chunk, (R + kMaxHeadChunks - 1) / kMaxHeadChunks);
    // flat indices into a chunk's [V, n] probabilities are int32
    chunk = std::min(chunk, (int64_t) (std::numeric_limits<int32_t>::max() / c.n_vocab) - 1);
    return std::max<int64_t>(1, std::min(chunk, R));
}

Inputs make_inputs(ggml_context * ctx, const ModelWeights & w, const MicroBatch & mb, bool backward, const LossSpec & loss, const GraphOptions & opt) {
    const bool merged = opt.merge_adapter > 0;
    const ModelConfig & c = w.config();
    const int64_t T = mb.L * mb.B, R = (int64_t) mb.rows.size();
    Inputs in;
    auto input = [&](ggml_type type, int64_t n0, int64_t n1 = 1) {
        ggml_tensor * t = n1 == 1 ? ggml_new_tensor_1d(ctx, type, n0) : ggml_new_tensor_2d(ctx, type, n0, n1);
        ggml_set_input(t);
        return t;
    };
    in.tokens = input(GGML_TYPE_I32, T);
    in.positions = input(GGML_TYPE_I32, T);
    in.mask = input(GGML_TYPE_F32, mb.L, mb.L);
    if (opt.flash_attn) in.mask16 = input(GGML_TYPE_F16, mb.L, mb.L);
    in.rows = input(GGML_TYPE_I32, R);
    in.targets = input(GGML_TYPE_I32, R);
    in.flat_idx = input(GGML_TYPE_I32, R);
    if (backward) {
        in.neg_w = input(GGML_TYPE_F32, R);
        if (loss.kl) in.kl_m = input(GGML_TYPE_F32, R);
        if (loss.kl) in.ref_lp = input(GGML_TYPE_F32, R);
        if (loss.has_old) in.old_lp = input(GGML_TYPE_F32, R);
    }
    // Dequantising frozen weights (a transposed copy, or a merged one) reads rows 0..n-1.
    if ((backward || merged) && needs_dequant(w)) in.iota = input(GGML_TYPE_I32, std::max({c.n_vocab, c.n_ff, c.n_embd, c.n_head * c.head_dim}));
    if (opt.dropout > 0) {
        in.drop_u = input(GGML_TYPE_F32, std::max({c.n_ff, c.n_embd, c.n_head * c.head_dim}), c.n_layer * (int64_t) kLoraTargets);
        in.drop_v = input(GGML_TYPE_F32, T);
    }
    return in;
}

// A uniform number in [lo, hi) that depends only on (seed, a, b).
float hashed_uniform(uint64_t seed, uint64_t a, uint64_t b, float lo, float hi) {
    SplitMix64 r(seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full));
    r.next();
    return lo + (hi - lo) * (float) r.uniform();
}

void set_inputs(const Inputs & in, const MicroBatch & mb, int64_t n_vocab, int64_t chunk, uint64_t dropout_seed) {
    // Inputs a graph does not read (e.g. targets in a forward-only pass) get no buffer.
    auto set = [](ggml_tensor * t, const void * data) {
        if (t && t->buffer) ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));
    };
    set(in.tokens, mb.tokens.data());
    set(in.positions, mb.positions.data());
    {
        const float neg_inf = -std::numeric_limits<float>::infinity();
        std::vector<float> mask((size_t) (mb.L * mb.L), neg_inf);
        for (int64_t q = 0; q < mb.L; ++q) {
            for (int64_t k = 0; k <= q; ++k) mask[q * mb.L + k] = 0.0f;
        }
        set(in.mask, mask.data());
        if (in.mask16) {
            std::vector<ggml_fp16_t> m16(mask.size());
            ggml_fp32_to_fp16_row(mask.data(), m16.data(), (int64_t) mask.size());
            set(in.mask16, m16.data());
        }
    }
    set(in.rows, mb.rows.data());
    set(in.targets, mb.targets.data());
    {
        std::vector<int32_t> flat(mb.rows.size());
        for (size_t r = 0; r < flat.size(); ++r) flat[r] = (int32_t) ((int64_t) (r % chunk) * n_vocab + mb.targets[r]);
        set(in.flat_idx, flat.data());
    }
    set(in.neg_w, mb.neg_w.data());
    set(in.kl_m, mb.kl_m.data());
    set(in.old_lp, mb.old_lp.data());
    set(in.ref_lp, mb.ref_lp.data());
    if (in.drop_u && in.drop_u->buffer) {
        // Factors in [10, 32): products of 100 to 1,024 radians, 16 to 163 periods, which makes
        // the phase uniform, while staying small enough for ggml-cuda's fast-math sinf to reduce
        // accurately. A token's factor follows its sequence's index in the whole batch and its
        // position, so however the batch is split into micro-batches, each token keeps its masks.
        const int64_t n = in.drop_u->ne[0], sites = in.drop_u->ne[1];
        std::vector<float> u((size_t) (n * sites));
        for (int64_t j = 0; j < sites; ++j) {
            for (int64_t i = 0; i < n; ++i) u[(size_t) (j * n + i)] = hashed_uniform(dropout_seed, 1 + (uint64_t) j, (uint64_t) i, 10.0f, 32.0f);
        }
        set(in.drop_u, u.data());
        std::vector<float> v((size_t) (mb.L * mb.B));
        for (int64_t b = 0; b < mb.B; ++b) {
            for (int64_t q = 0; q < mb.L; ++q) {
                v[(size_t) (b * mb.L + q)] = hashed_uniform(~dropout_seed, (uint64_t) mb.seq_index[(size_t) b], (uint64_t) mb.positions[(size_t) (b * mb.L + q)], 10.0f, 32.0f);
            }
        }
        set(in.drop_v, v.data());
    }
    if (in.iota) {
        std::vector<int32_t> iota((size_t) in.iota->ne[0]);
        for (size_t i = 0; i < iota.size(); ++i) iota[i] = (int32_t) i;
        set(in.iota, iota.data());
    }
}

void check_batch(const MicroBatch & mb, const LossSpec & loss, bool backward) {
    const size_t R = mb.rows.size();
    bool ok = mb.L > 0 && mb.B > 0 && mb.tokens.size() == (size_t) (mb.L * mb.B) && mb.positions.size() == mb.tokens.size() && R > 0 &&
              mb.targets.size() == R;
    if (backward) {
        ok = ok && mb.neg_w.size() == R && (!loss.kl || (mb.kl_m.size() == R && mb.ref_lp.size() == R)) &&
             (!loss.has_old || mb.old_lp.size() == R);
    }
    if (!ok) throw Error("internal error: inconsistent micro-batch");
}

// `host_ms` (when given) gains the time from `built_from` (the graph's building began) until the
// graph is placed, its memory planned and its inputs set: host work a GPU waits through.
// The allocated graph with the micro-batch's inputs: its rows' log-probs.
std::vector<float> compute_allocated(ggml_backend_sched_t sched, ggml_cgraph * gf, const Inputs & in, const MicroBatch & mb, int64_t n_vocab,
                                     int64_t chunk, const std::vector<ggml_tensor *> & lps, const char * what, uint64_t dropout_seed,
                                     Clock::time_point built_from, double * host_ms) {
    set_inputs(in, mb, n_vocab, chunk, dropout_seed);
    if (host_ms) *host_ms += ms_since(built_from);
    if (ggml_backend_sched_graph_compute(sched, gf) != GGML_STATUS_SUCCESS) throw Error(std::string(what) + " failed");
    std::vector<float> out(mb.rows.size());
    size_t off = 0;
    for (ggml_tensor * lp : lps) {
        const size_t n = (size_t) ggml_nelements(lp);
        ggml_backend_tensor_get(lp, out.data() + off, 0, n * sizeof(float));
        off += n;
    }
    return out;
}

// `keep`: the scheduler's allocation of the graph stays (TrainingPassCache).
std::vector<float> run(ggml_backend_sched_t sched, ggml_cgraph * gf, const Inputs & in, const MicroBatch & mb, int64_t n_vocab, int64_t chunk,
                       const std::vector<ggml_tensor *> & lps, const char * what, Placement * placed, uint64_t dropout_seed,
                       Clock::time_point built_from, double * host_ms, bool keep = false) {
    ggml_backend_sched_reset(sched);
    const int host_inputs = placed ? host_inputs_of(gf) : 0;
    if (!ggml_backend_sched_alloc_graph(sched, gf)) {
        throw Error(std::string("out of memory for the ") + what + " over " + std::to_string(mb.B) + " x " + std::to_string(mb.L) +
                    " tokens (a smaller memoryBudget or microBatchTokens makes smaller micro-batches)");
    }
    if (placed) placed->merge(placement_of(sched, gf, host_inputs));
    std::vector<float> out = compute_allocated(sched, gf, in, mb, n_vocab, chunk, lps, what, dropout_seed, built_from, host_ms);
    if (!keep) ggml_backend_sched_reset(sched);
    return out;
}

} // namespace

size_t train_graph_nodes(const ModelConfig & c, const GraphOptions & opt, int64_t rows) {
    const int64_t chunk = chunk_rows_for(c, opt, std::max<int64_t>(rows, 1));
    return train_graph_size(c.n_layer, (rows + chunk - 1) / chunk);
}

std::vector<float> compute_logprobs(const ModelWeights & w, const LoraView & lora, ggml_backend_sched_t sched, const MicroBatch & mb,
                                    const GraphOptions & opt, Placement * placed, double * host_ms) {
    const auto t0 = Clock::now();
    const LossSpec none;
    check_batch(mb, none, false);
    const ModelConfig & c = w.config();
    const int64_t R = (int64_t) mb.rows.size();
    const int64_t chunk = chunk_rows_for(c, opt, R);
    GraphMem g(train_graph_size(c.n_layer, (R + chunk - 1) / chunk));
    Inputs in = make_inputs(g.ctx, w, mb, false, none, opt);
    Builder b(g.ctx, g.gf, w, lora, in, mb.L, mb.B, opt);
    b.phase = "lp";
    ggml_tensor * x = b.embed();
    for (int64_t il = 0; il < c.n_layer; ++il) x = b.layer_done(b.layer_forward(il, x).out);
    std::vector<ggml_tensor *> lps = b.head(x, R, chunk, false, none, nullptr);
    return run(sched, g.gf, in, mb, c.n_vocab, chunk, lps, "log-prob pass", placed, opt.dropout_seed, t0, host_ms);
}

namespace {

struct TrainingGraph {
    std::unique_ptr<GraphMem> g;
    Inputs in;
    int64_t chunk = 0;
    std::vector<ggml_tensor *> lps;
};

TrainingGraph build_training_graph(const ModelWeights & w, const Adapter & adapter, const GradBuffers & grads, const MicroBatch & mb,
                                   const LossSpec & loss, const GraphOptions & opt) {
    check_batch(mb, loss, true);
    const ModelConfig & c = w.config();
    const int64_t R = (int64_t) mb.rows.size();
    TrainingGraph t;
    t.chunk = chunk_rows_for(c, opt, R);
    t.g = std::make_unique<GraphMem>(train_graph_size(c.n_layer, (R + t.chunk - 1) / t.chunk));
    ggml_cgraph * gf = t.g->gf;
    t.in = make_inputs(t.g->ctx, w, mb, true, loss, opt);
    Builder b(t.g->ctx, gf, w, adapter.view(), t.in, mb.L, mb.B, opt);
    const auto & params = adapter.params();
    for (size_t i = 0; i < params.size(); ++i) b.grad_of[params[i]] = grads.each[i];
    b.grads_whole = grads.whole;

    std::vector<ggml_tensor *> inputs((size_t) c.n_layer + 1);
    std::vector<LayerActs> acts((size_t) c.n_layer);
    inputs[0] = b.embed();
    for (int64_t il = 0; il < c.n_layer; ++il) {
        LayerActs a = b.layer_forward(il, inputs[il], false, b.keeps(il) && opt.kept_f16);
        inputs[il + 1] = b.layer_done(a.out);
        if (b.keeps(il)) acts[il] = a;
    }
    ggml_tensor * dx = nullptr;
    t.lps = b.head(inputs[c.n_layer], R, t.chunk, true, loss, &dx);
    ggml_build_forward_expand(gf, dx);
    for (int64_t il = c.n_layer - 1; il >= 0; --il) {
        // Expanding layer by layer keeps the graph in this order, so a recomputed layer's
        // activations are built just before its backward and freed right after.
        b.phase = "re";
        const LayerActs a = !opt.recompute ? b.widened(acts[il]) : b.keeps(il) ? b.rebuild_cheap(il, acts[il]) : b.layer_forward(il, inputs[il], true);
        b.phase = "bwd";
        dx = b.layer_backward(il, a, dx);
        // Nothing needs dL/d(embeddings): below layer 0 only its LoRA gradients (already expanded) count.
        if (il > 0) ggml_build_forward_expand(gf, dx);
    }
    b.finish_lora();
    return t;
}

} // namespace

struct TrainingPassCache {
    TrainingGraph t;
    ggml_backend_sched_t sched = nullptr;
    int64_t L = -1, B = -1, R = -1;
};

void TrainingPassCacheDeleter::operator()(TrainingPassCache * c) const { delete c; }

TrainingPassCachePtr new_training_pass_cache() { return TrainingPassCachePtr(new TrainingPassCache); }

std::vector<float> accumulate_gradients(const ModelWeights & w, const Adapter & adapter, const GradBuffers & grads,
                                        ggml_backend_sched_t sched, const MicroBatch & mb, const LossSpec & loss, const GraphOptions & opt,
                                        Placement * placed, double * host_ms, TrainingPassCache * cache) {
    const auto t0 = Clock::now();
    const int64_t R = (int64_t) mb.rows.size();
    if (cache && cache->t.g && cache->sched == sched && cache->L == mb.L && cache->B == mb.B && cache->R == R) {
        check_batch(mb, loss, true);
        const TrainingGraph & t = cache->t;
        return compute_allocated(sched, t.g->gf, t.in, mb, w.config().n_vocab, t.chunk, t.lps, "training pass", opt.dropout_seed, t0, host_ms);
    }
    TrainingGraph t = build_training_graph(w, adapter, grads, mb, loss, opt);
    if (!cache) return run(sched, t.g->gf, t.in, mb, w.config().n_vocab, t.chunk, t.lps, "training pass", placed, opt.dropout_seed, t0, host_ms);
    std::vector<float> out = run(sched, t.g->gf, t.in, mb, w.config().n_vocab, t.chunk, t.lps, "training pass", placed, opt.dropout_seed, t0, host_ms, true);
    cache->t = std::move(t);
    cache->sched = sched;
    cache->L = mb.L;
    cache->B = mb.B;
    cache->R = R;
    return out;
}

std::vector<size_t> training_pass_bytes(const ModelWeights & w, const Adapter & adapter, const GradBuffers & grads,
                                        ggml_backend_sched_t sched, int n_backends, const MicroBatch & mb, const LossSpec & loss,
                                        const GraphOptions & opt, Census * census) {
    TrainingGraph t = build_training_graph(w, adapter, grads, mb, loss, opt);
    if (census) census->add(t.g->gf);
    std::vector<size_t> sizes((size_t) n_backends, 0);
    ggml_backend_sched_reserve_size(sched, t.g->gf, sizes.data());
    ggml_backend_sched_reset(sched);
    return sizes;
}

} // namespace rrr

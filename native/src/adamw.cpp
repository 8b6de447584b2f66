#include "adamw.h"
#include "errors.h"
#include "op_profile.h"
#include "flat_buffer.h"

#include <cmath>
#include <string>

namespace rrr {

namespace {

struct ScratchGraph {
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    explicit ScratchGraph(size_t n_nodes) {
        ggml_init_params ip{ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false), nullptr, true};
        ctx = ggml_init(ip);
        if (!ctx) throw Error("out of host memory building the optimizer graph");
        gf = ggml_new_graph_custom(ctx, n_nodes, false);
    }
    ~ScratchGraph() { ggml_free(ctx); }
};

void compute(ggml_backend_sched_t sched, ggml_cgraph * gf, const char * what, Placement & placed) {
    ggml_backend_sched_reset(sched);
    const int host_inputs = host_inputs_of(gf);
    if (!ggml_backend_sched_alloc_graph(sched, gf)) throw Error(std::string("out of memory for the ") + what);
    placed.merge(placement_of(sched, gf, host_inputs));
}

} // namespace

AdamW::AdamW(const std::vector<ggml_tensor *> & params, ggml_tensor * params_whole, ggml_backend_t backend, const AdamWConfig & cfg)
    : cfg_(cfg), params_(params), params_whole_(params_whole) {
    if (!(cfg.beta1 >= 0 && cfg.beta1 < 1)) throw Error("optimizer beta1: must be in [0, 1)");
    if (!(cfg.beta2 >= 0 && cfg.beta2 < 1)) throw Error("optimizer beta2: must be in [0, 1)");
    if (!(cfg.eps > 0)) throw Error("optimizer eps: must be > 0");
    if (!(cfg.weight_decay >= 0)) throw Error("optimizer weightDecay: must be >= 0");
    if (!(cfg.grad_clip >= 0)) throw Error("optimizer gradClip: must be >= 0 (0 disables clipping)");
    ggml_init_params ip{ggml_tensor_overhead() * (3 * params.size() + 3), nullptr, true};
    ctx_ = ggml_init(ip);
    if (!ctx_) throw Error("out of host memory creating the optimizer");
    auto like_params = [&](const char * suffix, std::vector<ggml_tensor *> & out) {
        for (ggml_tensor * p : params) {
            ggml_tensor * t = ggml_dup_tensor(ctx_, p);
            ggml_format_name(t, "%s.%s", p->name, suffix);
            out.push_back(t);
        }
    };
    like_params("grad", grads_);
    like_params("adam_m", m_);
    like_params("adam_v", v_);
    try {
        FlatBuffer g = place_flat(ctx_, grads_, backend, "the optimizer's gradients");
        grad_buf_ = g.buffer;
        grads_whole_ = g.whole;
        FlatBuffer m = place_flat(ctx_, m_, backend, "the optimizer's first moments");
        m_buf_ = m.buffer;
        m_whole_ = m.whole;
        FlatBuffer v = place_flat(ctx_, v_, backend, "the optimizer's second moments");
        v_buf_ = v.buffer;
        v_whole_ = v.whole;
    } catch (...) {
        release();
        throw;
    }
    // The one-op update pairs element i of each whole tensor: the parameters must be laid out as
    // the gradients are (both by place_flat on this backend).
    bool same = params_whole && ggml_nelements(params_whole) == ggml_nelements(grads_whole_);
    for (size_t i = 0; same && i < params.size(); ++i) {
        same = (const char *) params[i]->data - (const char *) params_whole->data == (const char *) grads_[i]->data - (const char *) grads_whole_->data;
    }
    if (!same) {
        release();
        throw Error("internal error: the optimizer's parameters are not laid out as its gradients");
    }
}

AdamW::~AdamW() { release(); }

void AdamW::release() {
    for (ggml_backend_buffer_t * b : {&grad_buf_, &m_buf_, &v_buf_}) {
        if (*b) ggml_backend_buffer_free(*b);
        *b = nullptr;
    }
    if (ctx_) ggml_free(ctx_);
    ctx_ = nullptr;
}

void AdamW::zero_grads() { ggml_backend_buffer_clear(grad_buf_, 0); }

double AdamW::grad_norm(ggml_backend_sched_t sched, float unscale) {
    // The squares are summed while the gradients are still scaled (values near 1, where their
    // squares cannot overflow f32 as those of huge true gradients can); the norm is unscaled in double.
    float sq = 0;
    {
        ScratchGraph g(16);
        ggml_tensor * total = ggml_sum(g.ctx, ggml_sqr(g.ctx, grads_whole_));
        ggml_set_output(total);
        ggml_build_forward_expand(g.gf, total);
        name_role(g.ctx, nullptr, "adamw.norm");
        compute(sched, g.gf, "gradient norm", placement_);
        if (ggml_backend_sched_graph_compute(sched, g.gf) != GGML_STATUS_SUCCESS) throw Error("gradient norm computation failed");
        ggml_backend_tensor_get(total, &sq, 0, sizeof(float));
        ggml_backend_sched_reset(sched);
    }
    if (unscale != 1.0f) {
        // in place: the gradient buffers hold the true gradients from here on
        ScratchGraph g(16);
        ggml_build_forward_expand(g.gf, ggml_scale_inplace(g.ctx, grads_whole_, unscale));
        name_role(g.ctx, nullptr, "adamw.norm");
        compute(sched, g.gf, "gradient unscaling", placement_);
        if (ggml_backend_sched_graph_compute(sched, g.gf) != GGML_STATUS_SUCCESS) throw Error("gradient unscaling failed");
        ggml_backend_sched_reset(sched);
    }
    return std::sqrt((double) sq) * (double) unscale;
}

void AdamW::update(ggml_backend_sched_t sched, float lr, float grad_scale) {
    if (!(lr >= 0) || !std::isfinite(lr)) throw Error("step: learning rate must be a finite number >= 0 (got " + std::to_string(lr) + ")");
    ++t_;
    ScratchGraph g(16);
    ggml_tensor * hp = ggml_new_tensor_1d(g.ctx, GGML_TYPE_F32, 7);
    ggml_set_input(hp);
    // OPT_STEP_ADAMW insists on the PARAM flag; it is dropped again right after, because a PARAM
    // tensor counts as a graph node instead of a leaf in every later graph. The gaps between the
    // tensors stay zero: zero gradient, moments and weight give a zero step.
    ggml_set_param(params_whole_);
    ggml_tensor * gr = grad_scale == 1.0f ? grads_whole_ : ggml_scale(g.ctx, grads_whole_, grad_scale);
    ggml_build_forward_expand(g.gf, ggml_opt_step_adamw(g.ctx, params_whole_, gr, m_whole_, v_whole_, hp));
    params_whole_->flags &= ~GGML_TENSOR_FLAG_PARAM;
    name_role(g.ctx, nullptr, "adamw.step");
    compute(sched, g.gf, "optimizer step", placement_);
    const float b1h = 1.0f / (1.0f - (float) std::pow((double) cfg_.beta1, (double) t_));
    const float b2h = 1.0f / (1.0f - (float) std::pow((double) cfg_.beta2, (double) t_));
    const float h[7] = {lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, b1h, b2h};
    ggml_backend_tensor_set(hp, h, 0, sizeof(h));
    if (ggml_backend_sched_graph_compute(sched, g.gf) != GGML_STATUS_SUCCESS) throw Error("optimizer step failed");
    ggml_backend_sched_reset(sched);
}

} // namespace rrr

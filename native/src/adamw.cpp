#include "adamw.h"
#include "errors.h"
#include "op_profile.h"

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
    if (!ggml_backend_sched_alloc_graph(sched, gf)) throw Error(std::string("out of memory for the ") + what);
    placed.merge(placement_of(sched, gf));
}

} // namespace

AdamW::AdamW(const std::vector<ggml_tensor *> & params, ggml_backend_t backend, const AdamWConfig & cfg) : cfg_(cfg), params_(params) {
    if (!(cfg.beta1 >= 0 && cfg.beta1 < 1)) throw Error("--beta1: must be in [0, 1)");
    if (!(cfg.beta2 >= 0 && cfg.beta2 < 1)) throw Error("--beta2: must be in [0, 1)");
    if (!(cfg.eps > 0)) throw Error("--adam-eps: must be > 0");
    if (!(cfg.weight_decay >= 0)) throw Error("--weight-decay: must be >= 0");
    if (!(cfg.grad_clip >= 0)) throw Error("--grad-clip: must be >= 0 (0 disables clipping)");
    ggml_init_params ip{ggml_tensor_overhead() * (3 * params.size() + 1), nullptr, true};
    ctx_ = ggml_init(ip);
    if (!ctx_) throw Error("out of host memory creating the optimizer");
    for (ggml_tensor * p : params) {
        if (p->type != GGML_TYPE_F32) throw Error(std::string("optimizer: parameter ") + p->name + " is not f32");
        ggml_tensor * g = ggml_dup_tensor(ctx_, p);
        ggml_format_name(g, "%s.grad", p->name);
        grads_.push_back(g);
    }
    // Two contexts' worth of tensors in one: grads get their own buffer so zeroing them is one clear.
    ggml_context * mctx = nullptr;
    {
        ggml_init_params mp{ggml_tensor_overhead() * (2 * params.size() + 1), nullptr, true};
        mctx = ggml_init(mp);
        if (!mctx) throw Error("out of host memory creating the optimizer");
    }
    for (ggml_tensor * p : params) {
        ggml_tensor * m = ggml_dup_tensor(mctx, p);
        ggml_tensor * v = ggml_dup_tensor(mctx, p);
        ggml_format_name(m, "%s.adam_m", p->name);
        ggml_format_name(v, "%s.adam_v", p->name);
        m_.push_back(m);
        v_.push_back(v);
    }
    grad_buf_ = ggml_backend_alloc_ctx_tensors(ctx_, backend);
    moment_buf_ = grad_buf_ ? ggml_backend_alloc_ctx_tensors(mctx, backend) : nullptr;
    if (!grad_buf_ || !moment_buf_) {
        if (grad_buf_) ggml_backend_buffer_free(grad_buf_);
        ggml_free(mctx);
        ggml_free(ctx_);
        throw Error("out of memory allocating optimizer state on " + std::string(ggml_backend_name(backend)));
    }
    moment_ctx_ = mctx; // grads and moments have separate contexts so each gets one buffer
    ggml_backend_buffer_clear(grad_buf_, 0);
    ggml_backend_buffer_clear(moment_buf_, 0);
}

AdamW::~AdamW() {
    if (grad_buf_) ggml_backend_buffer_free(grad_buf_);
    if (moment_buf_) ggml_backend_buffer_free(moment_buf_);
    if (ctx_) ggml_free(ctx_);
    if (moment_ctx_) ggml_free(moment_ctx_);
}

void AdamW::zero_grads() { ggml_backend_buffer_clear(grad_buf_, 0); }

void AdamW::reset_moments() {
    ggml_backend_buffer_clear(moment_buf_, 0);
    t_ = 0;
}

double AdamW::grad_norm(ggml_backend_sched_t sched, float unscale) {
    // The squares are summed while the gradients are still scaled (values near 1, where their
    // squares cannot overflow f32 as those of huge true gradients can); the norm is unscaled in double.
    float sq = 0;
    {
        ScratchGraph g(4 * grads_.size() + 16);
        ggml_tensor * total = nullptr;
        for (ggml_tensor * gr : grads_) {
            ggml_tensor * s = ggml_sum(g.ctx, ggml_sqr(g.ctx, gr));
            total = total ? ggml_add(g.ctx, total, s) : s;
        }
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
        ScratchGraph g(grads_.size() + 16);
        for (ggml_tensor * gr : grads_) ggml_build_forward_expand(g.gf, ggml_scale_inplace(g.ctx, gr, unscale));
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
    ScratchGraph g(4 * params_.size() + 16);
    ggml_tensor * hp = ggml_new_tensor_1d(g.ctx, GGML_TYPE_F32, 7);
    ggml_set_input(hp);
    for (size_t i = 0; i < params_.size(); ++i) {
        // OPT_STEP_ADAMW insists on the PARAM flag; it is dropped again right after, because a
        // PARAM tensor counts as a graph node instead of a leaf in every later (forward) graph.
        ggml_set_param(params_[i]);
        ggml_tensor * gr = grad_scale == 1.0f ? grads_[i] : ggml_scale(g.ctx, grads_[i], grad_scale);
        ggml_build_forward_expand(g.gf, ggml_opt_step_adamw(g.ctx, params_[i], gr, m_[i], v_[i], hp));
        params_[i]->flags &= ~GGML_TENSOR_FLAG_PARAM;
    }
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

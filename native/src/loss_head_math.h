// The loss's coefficient at one row, dL/d(log p of its target), shared by the head node's CPU
// loops and its GPU kernel (loss_head.h), in the form train_graph.cpp's ggml ops give it: the
// advantage's -w, times the ratio ρ = p / p_old unless the clipped branch is the smaller one
// (then 0), plus KL's β (1 - p_ref / p).
#pragma once
#include <cmath>

#include "host_device.h"

namespace rrr {

RRR_HOST_DEVICE inline float loss_head_coef(float lp, float neg_w, bool has_old, float old_lp, float clip_eps, bool kl, float kl_m, float ref_lp) {
    float coef = neg_w;
    if (has_old) {
        const float rho = expf(lp - old_lp);
        const float u = rho * coef;
        const float cl = fminf(fmaxf(rho, 1.0f - clip_eps), 1.0f + clip_eps) * coef;
        coef = cl - u > 0.0f ? 0.0f : u; // min(ρA, clip(ρ)A): the clipped branch has no gradient
    }
    if (kl) coef += kl_m - kl_m * expf(ref_lp - lp);
    return coef;
}

} // namespace rrr

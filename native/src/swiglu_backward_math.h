// The SwiGLU's gradient for one number, shared by the CPU's loop and the GPU's kernel so both
// compute it the same way: with s = σ(g), d/dg [g·s·u] = u·s·(1 + g·(1 − s)) (ggml's SILU_BACK
// takes the same form) and d/du = g·s (ggml's SWIGLU of g and the gradient).
#pragma once
#include <cmath>

#include "host_device.h"

namespace rrr {

// The SwiGLU itself, silu(g)·u, as ggml-cuda's SWIGLU writes it.
RRR_HOST_DEVICE inline float swiglu_value(float g, float u) { return g / (1.0f + expf(-g)) * u; }

RRR_HOST_DEVICE inline void swiglu_grad(float g, float u, float d, float * d_gate, float * d_up) {
    const float e = 1.0f + expf(-g);
    const float s = 1.0f / e;
    *d_up = (g / e) * d;
    *d_gate = d * u * s * (1.0f + g * (1.0f - s));
}

} // namespace rrr

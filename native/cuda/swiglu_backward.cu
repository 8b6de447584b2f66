#include "grid.cuh"
#include "round16.cuh"
#include "swiglu_backward_cuda.h"
#include "swiglu_backward_math.h"

#include <cstdint>

namespace rrr {

namespace {

// Four numbers a thread at a time where every operand is 16-byte aligned and n a multiple of 4
// (ggml's buffers align tensors, and the node's planes are n floats apart; the copies are then
// 8-byte aligned), one otherwise: the kernel is bound by memory, and wider loads take fewer
// transactions.
template <typename C, bool kIn16, bool kD16>
__global__ void swiglu_backward_vec4(const void * g, const void * u, const void * d, float4 * dg, float4 * du, uint2 * cg, uint2 * cu, float4 * act,
                                     uint2 * act16, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n4; i += (int64_t) gridDim.x * blockDim.x) {
        const float4 gi = load4<C, kIn16>(g, i), ui = load4<C, kIn16>(u, i), di = load4<C, kD16>(d, i);
        float4 a, b;
        swiglu_grad(gi.x, ui.x, di.x, &a.x, &b.x);
        swiglu_grad(gi.y, ui.y, di.y, &a.y, &b.y);
        swiglu_grad(gi.z, ui.z, di.z, &a.z, &b.z);
        swiglu_grad(gi.w, ui.w, di.w, &a.w, &b.w);
        if (dg) {
            dg[i] = a;
            du[i] = b;
        }
        if (cg) {
            put4<C>(cg + i, a);
            put4<C>(cu + i, b);
        }
        if (act || act16) {
            const float4 v = make_float4(swiglu_value(gi.x, ui.x), swiglu_value(gi.y, ui.y), swiglu_value(gi.z, ui.z), swiglu_value(gi.w, ui.w));
            if (act) act[i] = v;
            if (act16) put4<C>(act16 + i, v);
        }
    }
}

template <typename C, bool kIn16, bool kD16>
__global__ void swiglu_backward_scalar(const void * g, const void * u, const void * d, float * dg, float * du, uint16_t * cg, uint16_t * cu, float * act,
                                       uint16_t * act16, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x) {
        const float gi = load1<C, kIn16>(g, i), ui = load1<C, kIn16>(u, i);
        float a, b;
        swiglu_grad(gi, ui, load1<C, kD16>(d, i), &a, &b);
        if (dg) {
            dg[i] = a;
            du[i] = b;
        }
        if (cg) {
            cg[i] = round16(a, (C *) nullptr);
            cu[i] = round16(b, (C *) nullptr);
        }
        if (act) act[i] = swiglu_value(gi, ui);
        if (act16) act16[i] = round16(swiglu_value(gi, ui), (C *) nullptr);
    }
}

bool aligned16(const void * p) { return ((uintptr_t) p & 15u) == 0; }

template <typename C, bool kIn16, bool kD16> void launch(const SwigluBackwardArgs & a, cudaStream_t stream) {
    // g and u (and d) as f32 (16-byte loads of four) or 16-bit words (8-byte loads)
    const uintptr_t in_align = kIn16 ? 7u : 15u, d_align = kD16 ? 7u : 15u;
    const bool vec = a.n % 4 == 0 && ((uintptr_t) a.g & in_align) == 0 && ((uintptr_t) a.u & in_align) == 0 && ((uintptr_t) a.d_act & d_align) == 0 && aligned16(a.d_gate) &&
                     aligned16(a.d_up) && aligned16(a.act) && ((uintptr_t) a.gate16 & 7u) == 0 && ((uintptr_t) a.up16 & 7u) == 0 && ((uintptr_t) a.act16 & 7u) == 0;
    if (vec) {
        const int64_t n4 = a.n / 4;
        swiglu_backward_vec4<C, kIn16, kD16><<<grid_blocks(n4), kGridThreads, 0, stream>>>(a.g, a.u, a.d_act, (float4 *) a.d_gate, (float4 *) a.d_up,
                                                                                (uint2 *) a.gate16, (uint2 *) a.up16, (float4 *) a.act, (uint2 *) a.act16, n4);
    } else {
        swiglu_backward_scalar<C, kIn16, kD16><<<grid_blocks(a.n), kGridThreads, 0, stream>>>(a.g, a.u, a.d_act, a.d_gate, a.d_up, (uint16_t *) a.gate16, (uint16_t *) a.up16,
                                                                                   a.act, (uint16_t *) a.act16, a.n);
    }
}

template <typename C> void launch_from(const SwigluBackwardArgs & a, cudaStream_t stream) {
    if (a.d16) launch<C, true, true>(a, stream);
    else if (a.in16) launch<C, true, false>(a, stream);
    else launch<C, false, false>(a, stream);
}

} // namespace

const char * swiglu_backward_cuda(const SwigluBackwardArgs & a, cudaStream_t stream) {
    if (a.n == 0) return nullptr;
    if (a.bf16) launch_from<__nv_bfloat16>(a, stream);
    else launch_from<__half>(a, stream);
    return cudaGetLastError() == cudaSuccess ? nullptr : "swiglu_backward: kernel launch failed";
}

} // namespace rrr

#include "grid.cuh"
#include "round16.cuh"
#include "swiglu_backward_math.h"
#include "swiglu_forward_cuda.h"

#include <cstdint>

namespace rrr {

namespace {

// Four numbers a thread where g and u are aligned for one load of four (16 bytes in f32, 8 as
// 16-bit words) and n a multiple of 4 (the result is then 8-byte aligned), one otherwise: bound
// by memory.
template <typename C, bool kIn16> __global__ void swiglu_forward_vec4(const void * g, const void * u, uint2 * out, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n4; i += (int64_t) gridDim.x * blockDim.x) {
        const float4 gi = load4<C, kIn16>(g, i), ui = load4<C, kIn16>(u, i);
        put4<C>(out + i, make_float4(swiglu_value(gi.x, ui.x), swiglu_value(gi.y, ui.y), swiglu_value(gi.z, ui.z), swiglu_value(gi.w, ui.w)));
    }
}

template <typename C, bool kIn16> __global__ void swiglu_forward_scalar(const void * g, const void * u, uint16_t * out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x) {
        out[i] = round16(swiglu_value(load1<C, kIn16>(g, i), load1<C, kIn16>(u, i)), (C *) nullptr);
    }
}

template <typename C, bool kIn16> void launch(const SwigluForwardArgs & a, cudaStream_t stream) {
    const uintptr_t in_align = kIn16 ? 7u : 15u;
    if (a.n % 4 == 0 && ((uintptr_t) a.g & in_align) == 0 && ((uintptr_t) a.u & in_align) == 0 && ((uintptr_t) a.out & 7u) == 0) {
        const int64_t n4 = a.n / 4;
        swiglu_forward_vec4<C, kIn16><<<grid_blocks(n4), kGridThreads, 0, stream>>>(a.g, a.u, (uint2 *) a.out, n4);
    } else {
        swiglu_forward_scalar<C, kIn16><<<grid_blocks(a.n), kGridThreads, 0, stream>>>(a.g, a.u, (uint16_t *) a.out, a.n);
    }
}

template <typename C> void launch_from(const SwigluForwardArgs & a, cudaStream_t stream) {
    if (a.in16) launch<C, true>(a, stream);
    else launch<C, false>(a, stream);
}

} // namespace

const char * swiglu_forward_cuda(const SwigluForwardArgs & a, cudaStream_t stream) {
    if (a.n == 0) return nullptr;
    if (a.bf16) launch_from<__nv_bfloat16>(a, stream);
    else launch_from<__half>(a, stream);
    return cudaGetLastError() == cudaSuccess ? nullptr : "swiglu_forward: kernel launch failed";
}

} // namespace rrr

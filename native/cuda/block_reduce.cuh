// Reductions over a thread block, for our kernels that take one block a row.
#pragma once
#include <cmath>

namespace rrr {

__device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The block's max or sum, returned to every thread.
template <bool kMax> __device__ inline float block_reduce(float v) {
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads(); // an earlier call's readers are done with part and total
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? part[lane] : (kMax ? -INFINITY : 0.0f);
        v = kMax ? warp_max(v) : warp_sum(v);
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}

} // namespace rrr

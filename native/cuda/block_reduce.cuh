// Reductions over a thread block, for our kernels that take one block a row.
#pragma once
#include <cmath>

namespace rrr {

__device__ inline float shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }

// `v` combined by `op` (associative and commutative) over the warp's 32 lanes, in every lane.
// T's shfl_xor (found by argument-dependent lookup for a kernel's own types) moves it across lanes.
template <typename T, typename Op> __device__ inline T warp_combine(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
    return v;
}

// The same over the block, returned to every thread; `none` is op's identity, which the first
// warp's lanes without a warp to stand for bring.
template <typename T, typename Op> __device__ inline T block_combine(T v, Op op, T none) {
    __shared__ T part[32];
    __shared__ T total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
    v = warp_combine(v, op);
    __syncthreads(); // an earlier call's readers are done with part and total
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_combine(lane < n_warps ? part[lane] : none, op);
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}

struct MaxOp {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};

// The block's max or sum, returned to every thread.
template <bool kMax> __device__ inline float block_reduce(float v) {
    if constexpr (kMax) return block_combine(v, MaxOp{}, -INFINITY);
    else return block_combine(v, SumOp{}, 0.0f);
}

} // namespace rrr

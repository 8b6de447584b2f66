#include "lora_merge_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace rrr {

namespace {

constexpr int kTile = 32; // a block merges a 32 x 32 tile of W: 32 inputs i by 32 outputs o
constexpr int kRows = 8;  // threads per block: 32 x 8, each summing 4 of the tile's numbers

template <typename T> struct Num;
template <> struct Num<float> {
    __device__ static float to_float(float v) { return v; }
    __device__ static float from_float(float v) { return v; }
};
template <> struct Num<__half> {
    __device__ static float to_float(__half v) { return __half2float(v); }
    __device__ static __half from_float(float v) { return __float2half_rn(v); }
};
template <> struct Num<__nv_bfloat16> {
    __device__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

// W [n_in, n_out] (i fastest), A [n_in, r], B [r, n_out]. The tile's slices of A and B go
// through shared memory 32 ranks at a time, read along their contiguous sides; the merged tile
// is written along i, and through shared memory transposed along o, so both writes coalesce.
// W in Tin, the merged weights in To (W's type, or bf16).
template <typename Tin, typename To>
__global__ void lora_merge_kernel(const Tin * __restrict__ W, const float * __restrict__ A, const float * __restrict__ B, To * out, To * out_t,
                                  int64_t n_in, int64_t n_out, int64_t R, float scale) {
    __shared__ float As[kTile][kTile + 1]; // [rank][i]
    __shared__ float Bs[kTile][kTile + 1]; // [rank][o]
    __shared__ To tile[kTile][kTile + 1];  // [o][i], rounded
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t i0 = (int64_t) blockIdx.x * kTile, o0 = (int64_t) blockIdx.y * kTile;
    float acc[kTile / kRows] = {};
    for (int64_t r0 = 0; r0 < R; r0 += kTile) {
        for (int k = ty; k < kTile; k += kRows) {
            const int64_t r = r0 + k, i = i0 + tx;
            As[k][tx] = r < R && i < n_in ? A[i + r * n_in] : 0.0f;
            const int64_t o = o0 + k, rb = r0 + tx;
            Bs[tx][k] = rb < R && o < n_out ? B[rb + o * R] : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < kTile; ++k) {
            const float a = As[k][tx];
#pragma unroll
            for (int j = 0; j < kTile / kRows; ++j) acc[j] += a * Bs[k][ty + j * kRows];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kTile / kRows; ++j) {
        const int64_t o = o0 + ty + j * kRows, i = i0 + tx;
        if (o < n_out && i < n_in) {
            const To v = Num<To>::from_float(Num<Tin>::to_float(W[i + o * n_in]) + scale * acc[j]);
            if (out) out[i + o * n_in] = v;
            tile[ty + j * kRows][tx] = v;
        }
    }
    if (!out_t) return;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kTile / kRows; ++j) {
        const int64_t i = i0 + ty + j * kRows, o = o0 + tx;
        if (o < n_out && i < n_in) out_t[o + i * n_out] = tile[tx][ty + j * kRows];
    }
}

template <typename Tin, typename To> void launch(const LoraMergeArgs & a, cudaStream_t stream) {
    const dim3 grid((unsigned) ((a.n_in + kTile - 1) / kTile), (unsigned) ((a.n_out + kTile - 1) / kTile));
    lora_merge_kernel<Tin, To><<<grid, dim3(kTile, kRows), 0, stream>>>((const Tin *) a.W, a.A, a.B, (To *) a.out, (To *) a.out_t, a.n_in, a.n_out,
                                                                      a.r, a.scale);
}

// Into W's own type, or into bf16.
template <typename Tin> const char * launch_from(const LoraMergeArgs & a, cudaStream_t stream) {
    if (a.out_type == a.type) launch<Tin, Tin>(a, stream);
    else if (a.out_type == GGML_TYPE_BF16) launch<Tin, __nv_bfloat16>(a, stream);
    else return "lora_merge: unsupported merged type";
    return nullptr;
}

} // namespace

const char * lora_merge_cuda(const LoraMergeArgs & a, cudaStream_t stream) {
    if (a.n_in == 0 || a.n_out == 0) return nullptr;
    if ((a.n_out + kTile - 1) / kTile > 65535) return "lora_merge: too many output rows for the kernel's grid";
    const char * err = nullptr;
    switch (a.type) {
        case GGML_TYPE_F32: err = launch_from<float>(a, stream); break;
        case GGML_TYPE_F16: err = launch_from<__half>(a, stream); break;
        case GGML_TYPE_BF16: err = launch_from<__nv_bfloat16>(a, stream); break;
        default: return "lora_merge: unsupported weight type";
    }
    if (err) return err;
    return cudaGetLastError() == cudaSuccess ? nullptr : "lora_merge: kernel launch failed";
}

} // namespace rrr

// f32 numbers rounded to f16 or bf16 (to nearest even, as ggml-cuda's conversions round) and
// stored as 16-bit words, for our kernels that write what ggml-cuda's 16-bit products read.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace rrr {

// The type is told by a null pointer to it: __half or __nv_bfloat16.
__device__ inline uint16_t round16(float v, __half *) { return __half_as_ushort(__float2half_rn(v)); }
__device__ inline uint16_t round16(float v, __nv_bfloat16 *) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

// A stored 16-bit word back to f32 (exact).
__device__ inline float unround16(uint32_t w, __half *) { return __half2float(__ushort_as_half((unsigned short) w)); }
__device__ inline float unround16(uint32_t w, __nv_bfloat16 *) { return __uint_as_float(w << 16); }

// Number i of an operand stored in f32 (kIn16 false) or as C's 16-bit words, and four of them
// at once (one 16-byte or one 8-byte load: the caller checks the alignment).
template <typename C, bool kIn16> __device__ inline float load1(const void * p, int64_t i) {
    if constexpr (kIn16) return unround16(((const uint16_t *) p)[i], (C *) nullptr);
    else return ((const float *) p)[i];
}
template <typename C, bool kIn16> __device__ inline float4 load4(const void * p, int64_t i) {
    if constexpr (kIn16) {
        const uint2 w = ((const uint2 *) p)[i];
        return make_float4(unround16(w.x & 0xffffu, (C *) nullptr), unround16(w.x >> 16, (C *) nullptr), unround16(w.y & 0xffffu, (C *) nullptr),
                           unround16(w.y >> 16, (C *) nullptr));
    } else {
        return ((const float4 *) p)[i];
    }
}

// Four numbers as one 8-byte store.
template <typename C> __device__ inline void put4(uint2 * p, float4 v) {
    *p = make_uint2((uint32_t) round16(v.x, (C *) nullptr) | ((uint32_t) round16(v.y, (C *) nullptr) << 16),
                    (uint32_t) round16(v.z, (C *) nullptr) | ((uint32_t) round16(v.w, (C *) nullptr) << 16));
}

} // namespace rrr

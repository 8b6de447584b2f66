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

// Four numbers as one 8-byte store.
template <typename C> __device__ inline void put4(uint2 * p, float4 v) {
    *p = make_uint2((uint32_t) round16(v.x, (C *) nullptr) | ((uint32_t) round16(v.y, (C *) nullptr) << 16),
                    (uint32_t) round16(v.z, (C *) nullptr) | ((uint32_t) round16(v.w, (C *) nullptr) << 16));
}

} // namespace rrr

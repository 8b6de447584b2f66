// __nv_bfloat16 for builds without CUDA (see cuda_runtime.h here): the top 16 bits of an f32,
// rounded to nearest even.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

namespace rrr_emu {
uint16_t f32_to_bf16(float v);
inline float bf16_to_f32(uint16_t b) {
    const uint32_t u = (uint32_t) b << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
} // namespace rrr_emu

struct __nv_bfloat16 {
    uint16_t bits;
    __nv_bfloat16() = default;
    operator float() const { return ::rrr_emu::bf16_to_f32(bits); }
};

inline __nv_bfloat16 __float2bfloat16_rn(float v) {
    __nv_bfloat16 b;
    b.bits = ::rrr_emu::f32_to_bf16(v);
    return b;
}
inline float __bfloat162float(__nv_bfloat16 b) { return ::rrr_emu::bf16_to_f32(b.bits); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }

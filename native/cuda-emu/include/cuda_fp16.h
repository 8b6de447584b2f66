// __half for builds without CUDA (see cuda_runtime.h here): a 16-bit word, rounded to nearest
// even from f32 as the GPU's __float2half_rn rounds.
#pragma once
#include <cstdint>

#include "cuda_runtime.h"

namespace rrr_emu {
uint16_t f32_to_f16(float v);
float f16_to_f32(uint16_t h);
} // namespace rrr_emu

struct __half {
    uint16_t bits;
    __half() = default;
    operator float() const { return ::rrr_emu::f16_to_f32(bits); }
};

inline __half __float2half_rn(float v) {
    __half h;
    h.bits = ::rrr_emu::f32_to_f16(v);
    return h;
}
inline float __half2float(__half h) { return ::rrr_emu::f16_to_f32(h.bits); }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(unsigned short w) {
    __half h;
    h.bits = w;
    return h;
}

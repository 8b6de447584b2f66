// f32 to f16 and bf16 words, rounded to nearest even (the GPU's __float2half_rn and
// __float2bfloat16_rn), and f16 back, for builds without CUDA (include/cuda_fp16.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>

namespace rrr_emu {

namespace {
uint32_t bits_of(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return u;
}
} // namespace

uint16_t f32_to_f16(float v) {
    const uint32_t u = bits_of(v), sign = (u >> 16) & 0x8000u, mag = u & 0x7fffffffu;
    if (mag > 0x7f800000u) return (uint16_t) (sign | 0x7e00u);  // NaN stays NaN
    if (mag >= 0x477ff000u) return (uint16_t) (sign | 0x7c00u); // 65520 and up round to infinity
    if (mag < 0x38800000u) {
        // below f16's smallest normal (2^-14): a multiple of 2^-24, rounded (nearbyint: to even)
        float a;
        std::memcpy(&a, &mag, sizeof a);
        return (uint16_t) (sign | (uint32_t) std::nearbyint(a * 16777216.0f));
    }
    // rebias the exponent (127 to 15), then round the 13 bits that go; a carry moves into the exponent
    const uint32_t m = mag - (112u << 23);
    return (uint16_t) (sign | ((m + 0xfffu + ((m >> 13) & 1u)) >> 13));
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float out;
    if (e == 0) {
        out = std::ldexp((float) m, -24); // zero or subnormal
        return sign ? -out : out;
    }
    const uint32_t u = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
    std::memcpy(&out, &u, sizeof out);
    return out;
}

uint16_t f32_to_bf16(float v) {
    const uint32_t u = bits_of(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t) ((u >> 16) | 0x40u); // NaN stays NaN (quiet)
    return (uint16_t) ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

} // namespace rrr_emu

// Small pieces our nodes' CPU loops share: which run of a node's numbers a thread takes, and
// numbers read and written in f32, f16 or bf16 (ggml's own roundings).
#pragma once
#include <algorithm>
#include <cstdint>

#include "ggml.h"

namespace rrr {

// Thread `ith` of `nth`'s run [lo, hi) of n numbers, whole blocks of `block` (a cache line of
// f32s by default) so that no two threads write one line.
struct ThreadSpan {
    int64_t lo = 0, hi = 0;
};
inline ThreadSpan thread_span(int64_t n, int ith, int nth, int64_t block = 64) {
    const int64_t blocks = (n + block - 1) / block, per = (blocks + nth - 1) / nth;
    return {std::min(n, ith * per * block), std::min(n, (ith + 1) * per * block)};
}

inline float load_as(const void * p, ggml_type t, int64_t i) {
    if (t == GGML_TYPE_F16) return ggml_fp16_to_fp32(((const ggml_fp16_t *) p)[i]);
    if (t == GGML_TYPE_BF16) return ggml_bf16_to_fp32(((const ggml_bf16_t *) p)[i]);
    return ((const float *) p)[i];
}

inline void store_as(void * p, ggml_type t, int64_t i, float v) {
    if (t == GGML_TYPE_F16) ((ggml_fp16_t *) p)[i] = ggml_fp32_to_fp16(v);
    else if (t == GGML_TYPE_BF16) ((ggml_bf16_t *) p)[i] = ggml_fp32_to_bf16(v);
    else ((float *) p)[i] = v;
}

// v as the 16-bit type t holds it (f16 or bf16, rounded to nearest even); any other t keeps v.
inline float rounded_as(ggml_type t, float v) {
    if (t != GGML_TYPE_F16 && t != GGML_TYPE_BF16) return v;
    uint16_t b = 0;
    store_as(&b, t, 0, v);
    return load_as(&b, t, 0);
}

} // namespace rrr

// The products our nodes run (lora_backward.h, loss_head.h), described once as cuBLAS reads
// them, so that the CPU runs them in plain loops (node_gemm_part) and a GPU as cuBLAS calls
// (native/cuda/node_gemm.cu) from the same description.
#pragma once
#include <cstdint>

#include "ggml.h"

namespace rrr {

// A product's operand as stored: a column-major matrix (a ggml [ne0, ne1] tensor is ne0 rows by
// ne1 columns) of `type` numbers, and where a GPU writes its copy in the product's type when it
// is stored in another (packed, ld = its rows; the CPU rounds each number as it reads it).
struct GemmOperand {
    const void * p = nullptr;
    ggml_type type = GGML_TYPE_F32;
    int64_t ld = 0;
    void * work = nullptr;
};

// C = alpha op(A) op(B) + beta C, as cuBLAS reads it: op(A) m x k, op(B) k x n, C m x n of
// `out` numbers: f32, or f16/bf16 (rounded to nearest even; `in` must be that type too).
// Both operands are multiplied in `in`: f32, or f16/bf16 (rounded to nearest even where stored
// otherwise), with f32 sums.
struct NodeGemm {
    bool ta = false, tb = false;
    int64_t m = 0, n = 0, k = 0;
    float alpha = 1.0f;
    GemmOperand A, B;
    float beta = 0.0f;
    void * C = nullptr;
    int64_t ldc = 0;
    ggml_type in = GGML_TYPE_F32;
    ggml_type out = GGML_TYPE_F32;
};
// Whether a type is one of the 16-bit ones our products multiply in (f16, bf16).
inline bool is16(ggml_type t) { return t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

// An operand's stored rows and columns.
inline int64_t stored_rows(const NodeGemm & g, bool a) { return a ? (g.ta ? g.k : g.m) : (g.tb ? g.n : g.k); }
inline int64_t stored_cols(const NodeGemm & g, bool a) { return a ? (g.ta ? g.m : g.k) : (g.tb ? g.k : g.n); }
inline double gemm_flops(const NodeGemm & g) { return 2.0 * (double) g.m * (double) g.n * (double) g.k; }

// Thread `ith` of `nth`'s share of the product on the CPU: a run of C's columns, or of its rows
// where it has fewer columns than threads. Plain loops: the CPU runs our nodes only where asked.
void node_gemm_part(const NodeGemm & g, int ith, int nth);

} // namespace rrr

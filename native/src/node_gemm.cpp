#include "node_gemm.h"
#include "cpu_numbers.h"

#include <algorithm>
#include <vector>

namespace rrr {

namespace {

// The f32 products' loops: a run of C's columns, or of its rows where it has fewer columns than
// threads, each inner loop over contiguous numbers where it can be. Sums are double: the head's
// node sums over a 150k vocabulary, where f32 sums drift by 1e-4 of the result.
void gemm_part_f32(const NodeGemm & g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const float * A = (const float *) g.A.p, * B = (const float *) g.B.p;
    const int64_t lda = g.A.ld, ldb = g.B.ld;
    std::vector<double> acc((size_t) (i1 - i0));
    for (int64_t j = j0; j < j1; ++j) {
        const int64_t c = j * g.ldc;
        if (g.ta) {
            // op(A)'s row i is A's column i: a dot product over contiguous p
            for (int64_t i = i0; i < i1; ++i) {
                const float * a = A + i * lda;
                double s = 0.0;
                for (int64_t p = 0; p < g.k; ++p) s += (double) a[p] * (g.tb ? B[j + p * ldb] : B[p + j * ldb]);
                acc[(size_t) (i - i0)] = s;
            }
        } else {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int64_t p = 0; p < g.k; ++p) {
                const double b = g.tb ? B[j + p * ldb] : B[p + j * ldb];
                if (b == 0.0) continue;
                const float * a = A + p * lda;
                for (int64_t i = i0; i < i1; ++i) acc[(size_t) (i - i0)] += a[i] * b;
            }
        }
        for (int64_t i = i0; i < i1; ++i) {
            const double before = g.beta == 0.0f ? 0.0 : (double) g.beta * load_as(g.C, g.out, c + i);
            store_as(g.C, g.out, c + i, (float) (before + g.alpha * acc[(size_t) (i - i0)]));
        }
    }
}

// A number of an operand as the product multiplies it: rounded to its 16-bit type.
float operand(const GemmOperand & o, ggml_type in, int64_t idx) {
    const float v = load_as(o.p, o.type, idx);
    return o.type == in ? v : rounded_as(in, v);
}

// 16-bit products: each operand rounded once into an f32 copy (packed), then the f32 loops:
// the same sums as rounding each number where it is read.
void gemm_part_16(const NodeGemm & g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const auto rounded_copy = [&](const GemmOperand & o, bool a) {
        const int64_t rows = stored_rows(g, a), cols = stored_cols(g, a);
        std::vector<float> v((size_t) (rows * cols));
        for (int64_t c = 0; c < cols; ++c) {
            for (int64_t r = 0; r < rows; ++r) v[(size_t) (r + c * rows)] = operand(o, g.in, r + c * o.ld);
        }
        return v;
    };
    const std::vector<float> A = rounded_copy(g.A, true), B = rounded_copy(g.B, false);
    NodeGemm f = g;
    f.A = {A.data(), GGML_TYPE_F32, stored_rows(g, true)};
    f.B = {B.data(), GGML_TYPE_F32, stored_rows(g, false)};
    f.in = GGML_TYPE_F32;
    gemm_part_f32(f, i0, i1, j0, j1);
}

} // namespace

void node_gemm_part(const NodeGemm & g, int ith, int nth) {
    const bool by_cols = g.n >= nth;
    const int64_t span = by_cols ? g.n : g.m, per = (span + nth - 1) / nth;
    const int64_t lo = std::min(span, ith * per), hi = std::min(span, lo + per);
    const int64_t i0 = by_cols ? 0 : lo, i1 = by_cols ? g.m : hi, j0 = by_cols ? lo : 0, j1 = by_cols ? hi : g.n;
    if (g.in == GGML_TYPE_F32 && g.A.type == GGML_TYPE_F32 && g.B.type == GGML_TYPE_F32) gemm_part_f32(g, i0, i1, j0, j1);
    else gemm_part_16(g, i0, i1, j0, j1);
}

} // namespace rrr

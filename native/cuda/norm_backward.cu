#include "block_reduce.cuh"
#include "norm_backward_cuda.h"
#include "norm_backward_math.h"

namespace rrr {

namespace {

constexpr int kRowThreads = 256;
constexpr size_t kCachedBytes = 48 << 10; // rows whose gradient fits are kept in shared memory

struct Terms {
    const float * dy[kNormBackMaxTerms];
};

__device__ inline float term_sum(const Terms & t, int n, int64_t i) {
    float d = 0.0f;
    for (int k = 0; k < n; ++k) d += t.dy[k][i];
    return d;
}

// One block a row: g = (Σ terms) ⊙ w (kept in shared memory when `cached`, else summed again),
// the row's two sums, then out = resid + the norm's gradient.
__global__ void norm_backward_rows(Terms terms, int n_terms, const float * x, const float * w, const float * resid, float * out, int64_t E, float eps,
                                   bool cached) {
    extern __shared__ float g_row[];
    const int64_t o = (int64_t) blockIdx.x * E;
    float sxx = 0.0f, sxg = 0.0f;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        const float g = term_sum(terms, n_terms, o + e) * w[e], xv = x[o + e];
        if (cached) g_row[e] = g;
        sxx += xv * xv;
        sxg += xv * g;
    }
    sxx = block_reduce<false>(sxx);
    sxg = block_reduce<false>(sxg);
    const RmsBackRow r = rms_back_row(sxx, sxg, E, eps);
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        const float g = cached ? g_row[e] : term_sum(terms, n_terms, o + e) * w[e];
        const float v = rms_back_value(r, g, x[o + e]);
        out[o + e] = resid ? resid[o + e] + v : v;
    }
}

} // namespace

const char * norm_backward_cuda(const NormBackwardArgs & a, cudaStream_t stream) {
    if (a.T == 0) return nullptr;
    Terms t{};
    for (int k = 0; k < a.n_terms; ++k) t.dy[k] = a.dy[k];
    const bool cached = (size_t) a.E * sizeof(float) <= kCachedBytes;
    norm_backward_rows<<<(unsigned) a.T, kRowThreads, cached ? (size_t) a.E * sizeof(float) : 0, stream>>>(t, a.n_terms, a.x, a.w, a.resid, a.out, a.E, a.eps, cached);
    return cudaGetLastError() == cudaSuccess ? nullptr : "norm_backward: kernel launch failed";
}

} // namespace rrr

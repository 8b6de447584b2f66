// AdamW over a fixed list of f32 parameter tensors: gradient accumulators and both moments live
// in backend buffers next to the parameters, and the update runs as a ggml graph (ggml's
// OPT_STEP_ADAMW, on the GPU when the parameters are there). Parameters, gradients and moments
// are each laid out in one buffer at the same offsets (flat_buffer.h), so the gradient norm,
// unscaling and the update are one op each over the whole set, not one per tensor (392 tensors
// for all seven projections of a 28-layer model).
#pragma once
#include <cstdint>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"
#include "backend.h"

namespace rrr {

struct AdamWConfig {
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
    float weight_decay = 0.0f;
    float grad_clip = 1.0f; // global L2 norm; 0 disables
};

class AdamW {
public:
    // `params_whole` spans `params` as place_flat() laid them out on `backend`.
    AdamW(const std::vector<ggml_tensor *> & params, ggml_tensor * params_whole, ggml_backend_t backend, const AdamWConfig & cfg);
    ~AdamW();
    AdamW(const AdamW &) = delete;
    AdamW & operator=(const AdamW &) = delete;

    const AdamWConfig & config() const { return cfg_; }
    const std::vector<ggml_tensor *> & params() const { return params_; }
    const std::vector<ggml_tensor *> & grads() const { return grads_; }
    // One tensor over all of grads() (flat_buffer.h).
    ggml_tensor * grads_whole() const { return grads_whole_; }
    const std::vector<ggml_tensor *> & first_moments() const { return m_; }
    const std::vector<ggml_tensor *> & second_moments() const { return v_; }

    int64_t steps() const { return t_; }
    void set_steps(int64_t t) { t_ = t; }

    void zero_grads();
    // Multiplies the accumulated gradients by `unscale` in place (undoing the backward pass's loss
    // scale), then returns their global L2 norm (computed on the device, one float read back).
    double grad_norm(ggml_backend_sched_t sched, float unscale = 1.0f);
    // One AdamW update with learning rate `lr`; the gradients are first multiplied by
    // `grad_scale` (the clipping factor). Increments the step count used for bias correction.
    void update(ggml_backend_sched_t sched, float lr, float grad_scale);
    // Where the norm and update graphs ran (backend.h), since construction.
    const Placement & placement() const { return placement_; }

private:
    void release(); // frees the buffers and the context (the destructor, or a failed constructor)

    AdamWConfig cfg_;
    std::vector<ggml_tensor *> params_, grads_, m_, v_;
    ggml_tensor * params_whole_ = nullptr;
    ggml_tensor * grads_whole_ = nullptr, * m_whole_ = nullptr, * v_whole_ = nullptr;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t grad_buf_ = nullptr, m_buf_ = nullptr, v_buf_ = nullptr;
    int64_t t_ = 0;
    Placement placement_;
};

} // namespace rrr

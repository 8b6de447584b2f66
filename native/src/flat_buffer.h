// f32 tensors laid out one after another in a single backend buffer, with one tensor spanning
// them all. Sets made from the same shapes on the same backend put each tensor at the same offset,
// so an element-wise op over the spanning tensors (AdamW's update, the gradient norm, unscaling)
// covers every tensor of a set in one op instead of one op per tensor.
#pragma once
#include <string>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"

namespace rrr {

struct FlatBuffer {
    ggml_backend_buffer_t buffer = nullptr; // the caller frees it
    ggml_tensor * whole = nullptr;          // f32, every tensor and the zeroed gaps between them
};

// Gives `tensors` (f32, made in `ctx` without data) their memory, each at an offset aligned for
// `backend`, and makes `whole` in `ctx` (which needs room for one more tensor). The buffer starts
// zeroed; element-wise ops that map zero to zero (AdamW with zero gradients, squares, scaling)
// keep the gaps zero. `what` names the set in errors.
FlatBuffer place_flat(ggml_context * ctx, const std::vector<ggml_tensor *> & tensors, ggml_backend_t backend, const std::string & what);

} // namespace rrr

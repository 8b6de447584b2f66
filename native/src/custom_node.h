// Our nodes (attn_backward.h, swiglu_backward.h, lora_merge.h, lora_backward.h, loss_head.h,
// norm_backward.h) are ggml custom ops. ggml keeps a custom op's parameters in op_params as its
// ggml_custom_op_params (ggml-impl.h, not the public header): the function, the task count, the
// userdata. They are read back here, in one place.
// Each node kind is told apart by its CPU function, and carries its scalars packed into the
// userdata's 64 bits: ggml never follows that pointer, so nothing outlives the graph.
#pragma once
#include <cstdint>
#include <cstring>

#include "ggml.h"

namespace rrr {

static_assert(sizeof(uintptr_t) == 8, "our nodes' scalars need a 64-bit userdata");

struct CustomNodeParams {
    ggml_custom_op_t fun;
    int n_tasks;
    void * userdata;
};

inline CustomNodeParams custom_node_params(const ggml_tensor * t) {
    CustomNodeParams p;
    std::memcpy(&p, t->op_params, sizeof p);
    return p;
}

// Whether `t` is a custom node that `fun` computes.
inline bool is_custom_node(const ggml_tensor * t, ggml_custom_op_t fun) { return t->op == GGML_OP_CUSTOM && custom_node_params(t).fun == fun; }

// The node's userdata as the bits it was packed from, and back.
inline uint64_t custom_node_bits(const ggml_tensor * t) { return (uint64_t) (uintptr_t) custom_node_params(t).userdata; }
inline void * as_userdata(uint64_t bits) { return (void *) (uintptr_t) bits; }

// A float's bits, for packing a scale into the userdata, and back.
inline uint32_t float_bits(float f) {
    uint32_t b = 0;
    std::memcpy(&b, &f, sizeof b);
    return b;
}
inline float bits_float(uint32_t b) {
    float f = 0.0f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}

} // namespace rrr

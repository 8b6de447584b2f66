// A frozen product y = Wᵀx (ggml's mul_mat(W, x)) as one graph node (GGML_OP_CUSTOM) that
// writes y in W's own 16-bit type, for the MLP's gate and up products of a merged step
// (GraphOptions::mlp16).
//
// Why a node of our own: ggml's products write f32, and the gate and up products are the widest
// activations of a layer ([n_ff, T] each). Written in 16 bits they take half the bytes to write,
// to read again in the forward SwiGLU and in its backward (both our nodes, which read them in
// either type), and to keep (a kept layer's largest part): PEFT's bf16 training keeps them so
// too. The sums stay f32; only the result is rounded, to nearest even.
//
// One cuBLAS GEMM with a 16-bit C on a GPU (our backend beside ggml-cuda, custom_backend.h);
// plain loops on the CPU (node_gemm.h).
#pragma once
#include <vector>

#include "ggml.h"
#include "node_gemm.h"

namespace rrr {

// W [n_in, n_out] and x [n_in, T], both f16 or both bf16 (cast x first): y [n_out, T] in that type.
ggml_tensor * product16(ggml_context * ctx, ggml_tensor * W, ggml_tensor * x);

bool is_product16(const ggml_tensor * t);
// Its product, on the node's data (shapes alone where there is none yet).
NodeGemm product16_gemm(const ggml_tensor * node);

} // namespace rrr

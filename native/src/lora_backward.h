// The adapters' backward pass for projections that read the same x (q, k and v; gate and up; o
// and down alone) as two graph nodes (GGML_OP_CUSTOM), for a merged step.
//
// Why nodes of our own: with the adapter merged into the weights, ggml's ops take an adapter's
// gradients in about a dozen small ops each (s·Aᵀx and its SCALE, B's transposing CONT, Bᵀdy and
// its SCALE, a CONCAT of the group's da, the two products, the views' adds). At the Qwen2.5-1.5B
// shape (16 x 512 tokens, two micro-batches, our other nodes on) that is 3,360 of the step's
// 7,496 ops planned, most of them too small to keep a GPU busy for the time it takes to launch
// them; with these nodes the step plans 5,536, the same FLOPs and bytes. With the SwiGLU node
// (swiglu_backward.h) down's group reads silu(g)·u from it, written beside its gradients,
// where a kept or recomputed layer would rebuild it for them in a pass of its own.
//
// Each group is two nodes whose products (lora_back_gemms) run one after the other, on the CPU
// in loops shared by its threads and on a GPU as cuBLAS calls on our backend beside ggml-cuda
// (custom_backend.h).
#pragma once
#include <cstdint>
#include <vector>

#include "ggml.h"
#include "node_gemm.h"

namespace rrr {

// One adapter of a group: its B [r, n_out] and its projection's output gradient dy [n_out, T],
// f32, or f16/bf16 (then B and s·Aᵀx are multiplied with it in that type, f32 sums: PEFT's
// bf16 training's precision).
struct LoraBackTerm {
    ggml_tensor * b = nullptr;
    ggml_tensor * dy = nullptr;
};

// The rows node: f32 [r·k, T, planes] for a group of k adapters, plane 0 their s·Aᵢᵀx stacked
// (what dBᵢ multiplies), plane 1 their s·Bᵢ dyᵢ stacked (daᵢ, what dAᵢ multiplies), then the
// work space where a GPU rounds f32 operands that meet a 16-bit x or dy. `A`: the group's A
// stacked [n_in, r·k]; x [n_in, T] f32, f16 or bf16.
ggml_tensor * lora_back_rows(ggml_context * ctx, ggml_tensor * x, ggml_tensor * A, const std::vector<LoraBackTerm> & terms, float scale);

// The gradients node: one flat f32 tensor, the group's dA [n_in, r·k] (x daᵀ) and then each
// adapter's dBᵢ [r, n_out_i] (axᵢ dyᵢᵀ), read through lora_back_grad_a/_b, then any work space;
// x and the gradients are the rows node's.
ggml_tensor * lora_back_grads(ggml_context * ctx, ggml_tensor * rows);
// The same node summing straight into the gradient buffers instead (each product's beta 1):
// `dA` the group's dA's [n_in, r·k] side by side (a view of the optimizer's flat gradients),
// `dB` each adapter's dBᵢ [r, n_out_i]. The node itself holds only work space. Where each group
// added its k dA and k dB into the buffers with ggml's ADD, 14 ops a layer at r·(n_in + n_out)
// numbers each, too small to keep a GPU busy for their launch.
ggml_tensor * lora_back_grads_into(ggml_context * ctx, ggml_tensor * rows, ggml_tensor * dA, const std::vector<ggml_tensor *> & dB);
// Adapter i's dA [n_in, r] and dB [r, n_out_i], views of the gradients node.
ggml_tensor * lora_back_grad_a(ggml_context * ctx, ggml_tensor * grads, int64_t i);
ggml_tensor * lora_back_grad_b(ggml_context * ctx, ggml_tensor * grads, int64_t i);

// Whether `t` is either node.
bool is_lora_back(const ggml_tensor * t);

// A node's products, on its tensors' data. Each writes its own part of the node's result (and
// work space) and reads only what came before the node, so they may run in any order or side by
// side.
std::vector<NodeGemm> lora_back_gemms(const ggml_tensor * node);
// Their FLOPs (2 m n k each), from the node's shape alone.
double lora_back_flops(const ggml_tensor * node);

} // namespace rrr

#include "tiny_model.h"
#include "errors.h"
#include "copy_init.h"
#include "gguf_meta.h"
#include "rng.h"

#include <cmath>
#include <cstdlib>
#include <memory>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace rrr {

namespace {

using Rng = SplitMix64;

// A weight type a model can be written in: floats, and quantized types ggml quantizes without an
// importance matrix (ggml asserts on the others, and on integer types, inside the write).
bool writable(ggml_type t) {
    if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) return true;
    // q8_1 and q8_K are the dot products' intermediate types: ggml quantizes no weights to them.
    return ggml_is_quantized(t) && !ggml_quantize_requires_imatrix(t) && t != GGML_TYPE_Q8_1 && t != GGML_TYPE_Q8_K;
}

ggml_type parse_type(const std::string & name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * n = ggml_type_name((ggml_type) t);
        if (n && name == n && ggml_type_size((ggml_type) t) > 0) {
            if (writable((ggml_type) t)) return (ggml_type) t;
            const char * why = ggml_quantize_requires_imatrix((ggml_type) t) ? "it needs an importance matrix"
                               : ggml_is_quantized((ggml_type) t)               ? "ggml quantizes no weights to it"
                                                                                : "not a weight type";
            throw Error("--type: " + name + " cannot be written here (" + why + "; e.g. f32, f16, bf16, q8_0, q4_0, q4_K)");
        }
    }
    throw Error("--type: unknown weight type '" + name + "' (e.g. f32, f16, bf16, q8_0, q4_0, q4_K)");
}

struct Writer {
    ggml_context * ctx;
    gguf_context * g;
    Rng & rng;
    const CopyInit * copy = nullptr;

    // Values are drawn in f32 and converted, so every type sees the same underlying weights.
    void add(const std::string & name, std::vector<int64_t> ne, ggml_type type, float mean, float stddev) {
        const int64_t n_per_row = ne[0];
        const int64_t nrows = ne.size() > 1 ? ne[1] : 1;
        if (n_per_row % ggml_blck_size(type) != 0) {
            throw Error("--type " + std::string(ggml_type_name(type)) + ": tensor '" + name + "' rows of " + std::to_string(n_per_row) +
                        " are not a multiple of the block size " + std::to_string(ggml_blck_size(type)));
        }
        std::vector<float> v((size_t) (n_per_row * nrows));
        for (float & x : v) x = mean + stddev * rng.normal();
        if (copy) apply_copy_init(*copy, name, ne, v);
        ggml_tensor * t = ne.size() == 1 ? ggml_new_tensor_1d(ctx, type, ne[0]) : ggml_new_tensor_2d(ctx, type, ne[0], ne[1]);
        ggml_set_name(t, name.c_str());
        if (type == GGML_TYPE_F32) {
            std::memcpy(t->data, v.data(), v.size() * sizeof(float));
        } else {
            ggml_quantize_chunk(type, v.data(), t->data, 0, nrows, n_per_row, nullptr);
        }
        gguf_add_tensor(g, t);
    }
};

} // namespace

uint64_t write_tiny_model(const TinyModelSpec & s) {
    if (s.arch != "llama" && s.arch != "qwen2" && s.arch != "qwen3") {
        throw Error("--arch: unknown architecture '" + s.arch + "' (expected llama, qwen2 or qwen3)");
    }
    if (s.out_path.empty()) throw Error("--out: an output path is required");
    if (s.n_embd <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_head_kv <= 0 || s.n_ff <= 0) {
        throw Error("make-tiny-model: sizes must be positive");
    }
    if (s.n_head % s.n_head_kv != 0) throw Error("--heads: must be a multiple of --kv-heads");
    const int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
    if (head_dim % 2 != 0) throw Error("--head-dim: the head size (--embd / --heads without it) must be even for rotary embeddings, got " + std::to_string(head_dim));
    if (s.head_dim <= 0 && s.n_embd % s.n_head != 0) throw Error("--embd: must be a multiple of --heads");
    const ggml_type wtype = parse_type(s.type);
    ggml_type etype = wtype == GGML_TYPE_BF16 ? GGML_TYPE_BF16 : GGML_TYPE_F16;
    if (!s.embd_type.empty()) {
        if (s.embd_type == "f32") etype = GGML_TYPE_F32;
        else if (s.embd_type == "f16") etype = GGML_TYPE_F16;
        else if (s.embd_type == "bf16") etype = GGML_TYPE_BF16;
        else throw Error("--embd-type: unknown type '" + s.embd_type + "' (expected f32, f16 or bf16)");
    }
    const bool tied = s.tied < 0 ? s.arch == "qwen2" : s.tied != 0;

    check_gguf_header(s.vocab_path);
    gguf_init_params vp{true, nullptr};
    gguf_context * vocab = gguf_init_from_file(s.vocab_path.c_str(), vp);
    if (!vocab) throw Error(s.vocab_path + ": corrupt vocab GGUF");
    const int64_t tok_id = gguf_find_key(vocab, "tokenizer.ggml.tokens");
    if (tok_id < 0) {
        gguf_free(vocab);
        throw Error(s.vocab_path + ": has no tokenizer.ggml.tokens");
    }
    const int64_t n_vocab = (int64_t) gguf_get_arr_n(vocab, tok_id);

    gguf_context * g = gguf_init_empty();
    gguf_set_kv(g, vocab);
    gguf_free(vocab);
    // Keep only the tokenizer from the vocab file; the architecture keys are ours.
    for (int64_t i = gguf_get_n_kv(g) - 1; i >= 0; --i) {
        const std::string key = gguf_get_key(g, i);
        if (key.rfind("tokenizer.", 0) != 0) gguf_remove_key(g, key.c_str());
    }
    const std::string a = s.arch + ".";
    gguf_set_val_str(g, "general.architecture", s.arch.c_str());
    gguf_set_val_str(g, "general.name", ("rrr-native tiny " + s.arch).c_str());
    gguf_set_val_u32(g, (a + "context_length").c_str(), (uint32_t) s.n_ctx);
    gguf_set_val_u32(g, (a + "embedding_length").c_str(), (uint32_t) s.n_embd);
    gguf_set_val_u32(g, (a + "block_count").c_str(), (uint32_t) s.n_layer);
    gguf_set_val_u32(g, (a + "feed_forward_length").c_str(), (uint32_t) s.n_ff);
    gguf_set_val_u32(g, (a + "attention.head_count").c_str(), (uint32_t) s.n_head);
    gguf_set_val_u32(g, (a + "attention.head_count_kv").c_str(), (uint32_t) s.n_head_kv);
    gguf_set_val_f32(g, (a + "attention.layer_norm_rms_epsilon").c_str(), s.rms_eps);
    gguf_set_val_f32(g, (a + "rope.freq_base").c_str(), s.rope_base);
    gguf_set_val_u32(g, (a + "attention.key_length").c_str(), (uint32_t) head_dim);
    gguf_set_val_u32(g, (a + "attention.value_length").c_str(), (uint32_t) head_dim);
    gguf_set_val_u32(g, (a + "rope.dimension_count").c_str(), (uint32_t) head_dim);

    const int64_t q_dim = s.n_head * head_dim, kv_dim = s.n_head_kv * head_dim;
    const size_t per_layer = (size_t) (2 * s.n_embd * q_dim + 2 * s.n_embd * kv_dim + 3 * s.n_embd * s.n_ff) * 4 + 64 * 1024;
    const size_t total = (size_t) n_vocab * s.n_embd * 4 * (tied ? 1 : 2) + per_layer * s.n_layer + ggml_tensor_overhead() * (16 * s.n_layer + 16) + (1 << 20);
    // Allocated here: ggml_init asserts (aborting the process) where its own allocation fails.
    std::unique_ptr<void, decltype(&std::free)> mem(std::malloc(total), &std::free);
    if (!mem) {
        gguf_free(g);
        throw Error("make-tiny-model: out of memory for the model's " + std::to_string(total >> 20) + " MiB of weights");
    }
    ggml_init_params ip{total, mem.get(), false};
    ggml_context * ctx = ggml_init(ip);
    try {
        Rng rng(s.seed);
        Writer w{ctx, g, rng};
        CopyInit copy;
        if (s.init == "copy") {
            copy.offset = s.copy_offset;
            copy.rope_mode = s.arch == "llama" ? GGML_ROPE_TYPE_NORMAL : GGML_ROPE_TYPE_NEOX;
            copy.rope_base = s.rope_base;
            copy.n_embd = s.n_embd;
            copy.n_head = s.n_head;
            copy.head_dim = head_dim;
            check_copy_init(copy, s.arch, s.n_head_kv);
            w.copy = &copy;
        } else if (s.init != "random") {
            throw Error("--init: unknown initialisation '" + s.init + "' (expected random or copy)");
        }
        // Scales keep activations near unit variance so logits are spread out (clear argmax)
        // rather than a near-uniform distribution that numerical noise could reorder.
        const float emb_std = tied ? 2.0f / std::sqrt((float) s.n_embd) : 1.0f;
        w.add("token_embd.weight", {s.n_embd, n_vocab}, etype, 0.0f, emb_std);
        w.add("output_norm.weight", {s.n_embd}, GGML_TYPE_F32, s.output_gain, 0.1f * s.output_gain);
        if (!tied) w.add("output.weight", {s.n_embd, n_vocab}, etype, 0.0f, 2.0f / std::sqrt((float) s.n_embd));
        for (int64_t i = 0; i < s.n_layer; ++i) {
            const std::string b = "blk." + std::to_string(i) + ".";
            const float in_std = 1.0f / std::sqrt((float) s.n_embd);
            w.add(b + "attn_norm.weight", {s.n_embd}, GGML_TYPE_F32, 1.0f, 0.1f);
            w.add(b + "attn_q.weight", {s.n_embd, q_dim}, wtype, 0.0f, in_std);
            w.add(b + "attn_k.weight", {s.n_embd, kv_dim}, wtype, 0.0f, in_std);
            w.add(b + "attn_v.weight", {s.n_embd, kv_dim}, wtype, 0.0f, in_std);
            if (s.arch == "qwen2") {
                w.add(b + "attn_q.bias", {q_dim}, GGML_TYPE_F32, 0.0f, 0.1f);
                w.add(b + "attn_k.bias", {kv_dim}, GGML_TYPE_F32, 0.0f, 0.1f);
                w.add(b + "attn_v.bias", {kv_dim}, GGML_TYPE_F32, 0.0f, 0.1f);
            }
            if (s.arch == "qwen3") {
                w.add(b + "attn_q_norm.weight", {head_dim}, GGML_TYPE_F32, 1.0f, 0.1f);
                w.add(b + "attn_k_norm.weight", {head_dim}, GGML_TYPE_F32, 1.0f, 0.1f);
            }
            w.add(b + "attn_output.weight", {q_dim, s.n_embd}, wtype, 0.0f, 1.0f / std::sqrt((float) q_dim));
            w.add(b + "ffn_norm.weight", {s.n_embd}, GGML_TYPE_F32, 1.0f, 0.1f);
            w.add(b + "ffn_gate.weight", {s.n_embd, s.n_ff}, wtype, 0.0f, in_std);
            w.add(b + "ffn_up.weight", {s.n_embd, s.n_ff}, wtype, 0.0f, in_std);
            w.add(b + "ffn_down.weight", {s.n_ff, s.n_embd}, wtype, 0.0f, 1.0f / std::sqrt((float) s.n_ff));
        }
        write_gguf_atomic(g, s.out_path);
    } catch (...) {
        ggml_free(ctx);
        gguf_free(g);
        throw;
    }
    ggml_free(ctx);
    gguf_free(g);
    struct stat st {};
    stat(s.out_path.c_str(), &st);
    return (uint64_t) st.st_size;
}

} // namespace rrr

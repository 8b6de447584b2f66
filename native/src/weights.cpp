#include "weights.h"
#include "errors.h"
#include "gguf_meta.h"

#include <algorithm>
#include <cstdio>
#include <sys/stat.h>
#include <vector>

#include "gguf.h"

namespace rrr {

const char * arch_name(Arch a) {
    switch (a) {
        case Arch::Llama: return "llama";
        case Arch::Qwen2: return "qwen2";
        case Arch::Qwen3: return "qwen3";
    }
    return "?";
}

namespace {

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

struct Loader {
    const std::string & path;
    ggml_context * meta;

    ggml_tensor * get(const std::string & name, std::vector<int64_t> shape, bool required) const {
        ggml_tensor * t = ggml_get_tensor(meta, name.c_str());
        if (!t) {
            if (required) throw Error(path + ": missing tensor '" + name + "'");
            return nullptr;
        }
        bool ok = ggml_n_dims(t) <= (int) shape.size();
        for (size_t i = 0; ok && i < shape.size(); ++i) ok = t->ne[i] == shape[i];
        if (!ok) {
            throw Error(path + ": tensor '" + name + "' has shape " + shape_str(t->ne, std::max(ggml_n_dims(t), (int) shape.size())) +
                        ", expected " + shape_str(shape.data(), (int) shape.size()));
        }
        return t;
    }
};

std::string blk(int i, const char * name) { return "blk." + std::to_string(i) + "." + name; }

ModelConfig read_config(const gguf_context * g, ggml_context * meta, const std::string & path) {
    ModelConfig c;
    // An adapter or a training state carries a model's architecture too: said for what it is,
    // not as the first hyperparameter it lacks.
    const std::string type = gguf_has(g, "general.type") ? gguf_str(g, "general.type", path) : "model";
    if (type == "adapter") throw Error(path + ": a LoRA adapter, not a model (an adapter goes with its base model)");
    if (type != "model") throw Error(path + ": a GGUF of type '" + type + "', not a model");
    const std::string arch = gguf_str(g, "general.architecture", path);
    if (arch == "llama") c.arch = Arch::Llama;
    else if (arch == "qwen2") c.arch = Arch::Qwen2;
    else if (arch == "qwen3") c.arch = Arch::Qwen3;
    else throw Error(path + ": unsupported architecture '" + arch + "' (supported: llama, qwen2, qwen3)");
    c.arch_name = arch;
    const std::string p = arch + ".";
    c.n_embd = gguf_int(g, p + "embedding_length", path);
    c.n_layer = gguf_int(g, p + "block_count", path);
    c.n_ff = gguf_int(g, p + "feed_forward_length", path);
    c.n_head = gguf_int(g, p + "attention.head_count", path);
    c.n_head_kv = gguf_int_or(g, p + "attention.head_count_kv", c.n_head, path);
    c.n_ctx_train = gguf_int_or(g, p + "context_length", 4096, path);
    if (c.n_embd <= 0 || c.n_layer <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 || c.n_ff <= 0) {
        throw Error(path + ": non-positive hyper-parameter in " + arch + ".* metadata");
    }
    if (c.n_head % c.n_head_kv != 0) {
        throw Error(path + ": head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " + std::to_string(c.n_head_kv));
    }
    c.head_dim = gguf_int_or(g, p + "attention.key_length", c.n_embd / c.n_head, path);
    const int64_t v_dim = gguf_int_or(g, p + "attention.value_length", c.head_dim, path);
    if (v_dim != c.head_dim) throw Error(path + ": key_length != value_length is not supported");
    c.n_rot = gguf_int_or(g, p + "rope.dimension_count", c.head_dim, path);
    if (c.n_rot != c.head_dim) throw Error(path + ": partial rotary embeddings (rope.dimension_count != head dim) are not supported");
    c.rms_eps = gguf_float_or(g, p + "attention.layer_norm_rms_epsilon", 1e-5f, path);
    c.rope_base = gguf_float_or(g, p + "rope.freq_base", 10000.0f, path);
    const std::string scaling = gguf_has(g, p + "rope.scaling.type") ? gguf_str(g, p + "rope.scaling.type", path) : "none";
    if (scaling == "linear") {
        const float factor = gguf_float_or(g, p + "rope.scaling.factor", 1.0f, path);
        c.rope_freq_scale = factor > 0 ? 1.0f / factor : 1.0f;
    } else if (scaling != "none") {
        throw Error(path + ": rope scaling '" + scaling + "' is not supported (supported: none, linear)");
    }
    if (gguf_has(g, p + "rope.scale_linear")) c.rope_freq_scale = 1.0f / gguf_float_or(g, p + "rope.scale_linear", 1.0f, path);
    c.rope_mode = c.arch == Arch::Llama ? GGML_ROPE_TYPE_NORMAL : GGML_ROPE_TYPE_NEOX;
    c.qk_norm = c.arch == Arch::Qwen3;

    ggml_tensor * emb = ggml_get_tensor(meta, "token_embd.weight");
    if (!emb) throw Error(path + ": missing tensor 'token_embd.weight'");
    if (emb->ne[0] != c.n_embd) {
        throw Error(path + ": tensor 'token_embd.weight' has shape " + shape_str(emb->ne, 2) + ", expected [" + std::to_string(c.n_embd) + ", n_vocab]");
    }
    c.n_vocab = emb->ne[1];
    c.tied_embeddings = ggml_get_tensor(meta, "output.weight") == nullptr;
    c.qkv_bias = ggml_get_tensor(meta, "blk.0.attn_q.bias") != nullptr;
    c.rope_freq_factors = ggml_get_tensor(meta, "rope_freqs.weight") != nullptr;
    return c;
}

} // namespace

ModelWeights::ModelWeights(const std::string & path, ggml_backend_t backend) : path_(path) {
    check_gguf_header(path);
    gguf_init_params params{/*no_alloc*/ true, &meta_};
    gguf_context * g = gguf_init_from_file(path.c_str(), params);
    if (!g) throw Error(path + ": corrupt or truncated GGUF (its header and metadata could not be read)");
    try {
        cfg_ = read_config(g, meta_, path);
        const ModelConfig & c = cfg_;
        Loader L{path, meta_};
        const int64_t q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
        tok_embd = L.get("token_embd.weight", {c.n_embd, c.n_vocab}, true);
        output_norm = L.get("output_norm.weight", {c.n_embd}, true);
        output = c.tied_embeddings ? tok_embd : L.get("output.weight", {c.n_embd, c.n_vocab}, true);
        rope_freqs = L.get("rope_freqs.weight", {c.head_dim / 2}, false);
        layers.resize(c.n_layer);
        for (int i = 0; i < (int) c.n_layer; ++i) {
            LayerWeights & l = layers[i];
            l.attn_norm = L.get(blk(i, "attn_norm.weight"), {c.n_embd}, true);
            l.wq = L.get(blk(i, "attn_q.weight"), {c.n_embd, q_dim}, true);
            l.wk = L.get(blk(i, "attn_k.weight"), {c.n_embd, kv_dim}, true);
            l.wv = L.get(blk(i, "attn_v.weight"), {c.n_embd, kv_dim}, true);
            l.wo = L.get(blk(i, "attn_output.weight"), {q_dim, c.n_embd}, true);
            l.bq = L.get(blk(i, "attn_q.bias"), {q_dim}, c.qkv_bias);
            l.bk = L.get(blk(i, "attn_k.bias"), {kv_dim}, c.qkv_bias);
            l.bv = L.get(blk(i, "attn_v.bias"), {kv_dim}, c.qkv_bias);
            l.q_norm = L.get(blk(i, "attn_q_norm.weight"), {c.head_dim}, c.qk_norm);
            l.k_norm = L.get(blk(i, "attn_k_norm.weight"), {c.head_dim}, c.qk_norm);
            l.ffn_norm = L.get(blk(i, "ffn_norm.weight"), {c.n_embd}, true);
            l.w_gate = L.get(blk(i, "ffn_gate.weight"), {c.n_embd, c.n_ff}, true);
            l.w_up = L.get(blk(i, "ffn_up.weight"), {c.n_embd, c.n_ff}, true);
            l.w_down = L.get(blk(i, "ffn_down.weight"), {c.n_ff, c.n_embd}, true);
        }

        // gguf only parses the header; a cut-off download shows up as data past the end of file.
        struct stat st {};
        stat(path.c_str(), &st);
        const size_t data_off = gguf_get_data_offset(g);
        const int64_t n_tensors = gguf_get_n_tensors(g);
        for (int64_t i = 0; i < n_tensors; ++i) {
            const size_t end = data_off + gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i);
            if (end > (size_t) st.st_size) {
                throw Error(path + ": truncated file (tensor '" + gguf_get_tensor_name(g, i) + "' ends at byte " +
                            std::to_string(end) + ", file has " + std::to_string((long long) st.st_size) + ")");
            }
        }

        buffer_ = ggml_backend_alloc_ctx_tensors(meta_, backend);
        if (!buffer_) throw Error(path + ": out of memory allocating " + std::to_string(ggml_get_mem_size(meta_)) + " bytes of weights on " + ggml_backend_name(backend));
        ggml_backend_buffer_set_usage(buffer_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

        FILE * f = std::fopen(path.c_str(), "rb");
        if (!f) throw Error(path + ": cannot open for reading");
        const bool host = ggml_backend_buffer_is_host(buffer_);
        std::vector<uint8_t> staging;
        for (int64_t i = 0; i < n_tensors; ++i) {
            ggml_tensor * t = ggml_get_tensor(meta_, gguf_get_tensor_name(g, i));
            const size_t n = ggml_nbytes(t);
            const size_t off = data_off + gguf_get_tensor_offset(g, i);
            bool ok = fseeko(f, (off_t) off, SEEK_SET) == 0;
            if (ok && host) {
                ok = std::fread(t->data, 1, n, f) == n;
            } else if (ok) {
                staging.resize(n);
                ok = std::fread(staging.data(), 1, n, f) == n;
                if (ok) ggml_backend_tensor_set(t, staging.data(), 0, n);
            }
            if (!ok) {
                std::fclose(f);
                throw Error(path + ": read error in tensor '" + std::string(t->name) + "'");
            }
        }
        std::fclose(f);
    } catch (...) {
        gguf_free(g);
        if (buffer_) ggml_backend_buffer_free(buffer_);
        ggml_free(meta_);
        buffer_ = nullptr;
        meta_ = nullptr;
        throw;
    }
    gguf_free(g);
}

ModelWeights::~ModelWeights() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (meta_) ggml_free(meta_);
}

size_t ModelWeights::bytes() const { return buffer_ ? ggml_backend_buffer_get_size(buffer_) : 0; }

std::string ModelWeights::weight_type() const {
    return layers.empty() ? ggml_type_name(tok_embd->type) : ggml_type_name(layers[0].wq->type);
}

} // namespace rrr

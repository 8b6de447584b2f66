#include "lora_gguf.h"
#include "errors.h"
#include "gguf_meta.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <vector>

#include "gguf.h"

namespace rrr {

namespace {

constexpr const char * kStateType = "rrr-train-state";
constexpr int64_t kStateVersion = 1;

// Host copies of backend tensors, kept alive until the file is written.
struct GgufWrite {
    gguf_context * g = gguf_init_empty();
    ggml_context * ctx = nullptr;
    explicit GgufWrite(size_t bytes, size_t n_tensors) {
        ggml_init_params ip{bytes + ggml_tensor_overhead() * (n_tensors + 1), nullptr, false};
        ctx = ggml_init(ip);
        if (!ctx || !g) throw Error("out of host memory writing a GGUF");
    }
    ~GgufWrite() {
        gguf_free(g);
        if (ctx) ggml_free(ctx);
    }
    void add(const ggml_tensor * src) {
        ggml_tensor * t = ggml_dup_tensor(ctx, src);
        ggml_set_name(t, src->name);
        ggml_backend_tensor_get(src, t->data, 0, ggml_nbytes(src));
        gguf_add_tensor(g, t);
    }
};

size_t bytes_of(const std::vector<ggml_tensor *> & ts) {
    size_t n = 0;
    for (const ggml_tensor * t : ts) n += GGML_PAD(ggml_nbytes(t), GGML_MEM_ALIGN);
    return n;
}

// Copies file tensor `src` into backend tensor `dst` of the same shape, as f32.
void set_from_file(ggml_tensor * dst, const ggml_tensor * src, const std::string & path) {
    if (!ggml_are_same_shape(dst, src)) throw Error(path + ": tensor '" + std::string(src->name) + "' has the wrong shape for this model");
    if (src->type == GGML_TYPE_F32) {
        ggml_backend_tensor_set(dst, src->data, 0, ggml_nbytes(dst));
        return;
    }
    const std::vector<float> tmp = lora_tensor_f32(src, path);
    ggml_backend_tensor_set(dst, tmp.data(), 0, ggml_nbytes(dst));
}

std::string targets_str(const AdapterSpec & s) {
    std::string out;
    for (size_t i = 0; i < kLoraTargets; ++i) {
        if (s.targets[i]) out += (out.empty() ? "" : ",") + std::string(lora_target_name((LoraTarget) i));
    }
    return out;
}

void check_same_spec(const AdapterSpec & want, const AdapterSpec & got, const std::string & path) {
    if (got.rank != want.rank) {
        throw Error(path + ": adapter rank " + std::to_string(got.rank) + " does not match the trainer's rank " + std::to_string(want.rank));
    }
    if (got.alpha != want.alpha) {
        throw Error(path + ": adapter alpha " + std::to_string(got.alpha) + " does not match the trainer's alpha " + std::to_string(want.alpha));
    }
    if (got.targets != want.targets) {
        throw Error(path + ": adapter targets " + targets_str(got) + " do not match the trainer's targets " + targets_str(want));
    }
}

} // namespace

std::vector<float> lora_tensor_f32(const ggml_tensor * t, const std::string & path) {
    std::vector<float> out((size_t) ggml_nelements(t));
    if (t->type == GGML_TYPE_F32) {
        std::memcpy(out.data(), t->data, out.size() * sizeof(float));
        return out;
    }
    // Any type ggml can turn back into floats: the converter writes f32, f16, bf16 or q8_0.
    const ggml_type_traits * tr = ggml_get_type_traits(t->type);
    if (!tr->to_float || t->ne[0] % ggml_blck_size(t->type) != 0) {
        throw Error(path + ": tensor '" + std::string(t->name) + "' has type " + ggml_type_name(t->type) + ", which rrr-native cannot read as numbers");
    }
    const size_t row = ggml_row_size(t->type, t->ne[0]);
    for (int64_t r = 0; r < ggml_nrows(t); ++r) tr->to_float((const char *) t->data + r * row, out.data() + r * t->ne[0], t->ne[0]);
    return out;
}

float lora_alpha(const gguf_context * g, int64_t rank, const std::string & path) {
    const float alpha = gguf_float_or(g, "adapter.lora.alpha", 0.0f, path);
    if (alpha < 0) throw Error(path + ": adapter.lora.alpha is negative (" + std::to_string(alpha) + ")");
    // llama.cpp's loader scales by alpha / rank, or by 1 where alpha is 0 or missing: alpha = rank.
    return alpha > 0 ? alpha : (float) rank;
}

bool parse_lora_name(const std::string & name, LoraFileTensor & out, const std::string & path) {
    const auto ends_with = [&](const char * suffix) {
        const size_t n = std::strlen(suffix);
        return name.size() > n && name.compare(name.size() - n, n, suffix) == 0;
    };
    const bool is_a = ends_with(".lora_a");
    const bool is_b = ends_with(".lora_b");
    if (!is_a && !is_b) {
        // As llama.cpp's loader: norm vectors are skipped, anything else is not a LoRA file's.
        if (ends_with("_norm.weight")) return false;
        throw Error(path + ": tensor '" + name + "' is not a LoRA tensor (expected names ending in .lora_a or .lora_b; llama.cpp refuses it too)");
    }
    const std::string base = name.substr(0, name.size() - 7);
    int layer = -1, consumed = 0;
    char stem[64] = {0};
    if (std::sscanf(base.c_str(), "blk.%d.%63[a-z_].weight%n", &layer, stem, &consumed) == 2 && (size_t) consumed == base.size() && layer >= 0) {
        for (size_t t = 0; t < kLoraTargets; ++t) {
            if (std::strcmp(stem, lora_target_tensor((LoraTarget) t)) == 0) {
                out.layer = layer;
                out.target = (LoraTarget) t;
                out.is_b = is_b;
                return true;
            }
        }
    }
    throw Error(path + ": LoRA tensor '" + name + "' is on a projection rrr-native does not support (supported: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)");
}

AdapterSpec read_adapter_spec(const std::string & path, const ModelWeights & w) {
    GgufFile f(path, false);
    const ModelConfig & c = w.config();
    const std::string type = gguf_has(f.g, "general.type") ? gguf_str(f.g, "general.type", path) : "";
    if (type != "adapter") throw Error(path + ": not a LoRA adapter (general.type is '" + type + "', expected 'adapter')");
    const std::string atype = gguf_has(f.g, "adapter.type") ? gguf_str(f.g, "adapter.type", path) : "";
    if (atype != "lora") throw Error(path + ": adapter.type is '" + atype + "', expected 'lora'");
    const std::string arch = gguf_str(f.g, "general.architecture", path);
    if (arch != c.arch_name) throw Error(path + ": adapter for architecture '" + arch + "', but the model is '" + c.arch_name + "'");
    AdapterSpec s;
    s.rank = 0;
    std::map<std::pair<int64_t, int>, int> seen; // (layer, target) -> bit 1 = a, bit 2 = b
    for (int64_t i = 0; i < gguf_get_n_tensors(f.g); ++i) {
        const std::string name = gguf_get_tensor_name(f.g, i);
        LoraFileTensor lt;
        if (!parse_lora_name(name, lt, path)) continue;
        if (lt.layer >= c.n_layer) throw Error(path + ": tensor '" + name + "' is for layer " + std::to_string(lt.layer) + ", the model has " + std::to_string(c.n_layer));
        const ggml_tensor * t = ggml_get_tensor(f.ctx, name.c_str());
        const ggml_tensor * base = Adapter::base_weight(w, lt.layer, lt.target);
        const int64_t r = lt.is_b ? t->ne[0] : t->ne[1];
        const bool shape_ok = lt.is_b ? t->ne[1] == base->ne[1] : t->ne[0] == base->ne[0];
        if (!shape_ok || ggml_n_dims(t) > 2) {
            throw Error(path + ": tensor '" + name + "' has shape [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
                        "], which does not fit the model's " + ggml_get_name(base) + " [" + std::to_string(base->ne[0]) + ", " + std::to_string(base->ne[1]) + "]");
        }
        if (s.rank == 0) s.rank = r;
        if (r != s.rank) throw Error(path + ": tensor '" + name + "' has rank " + std::to_string(r) + ", other tensors have rank " + std::to_string(s.rank));
        seen[{lt.layer, (int) lt.target}] |= lt.is_b ? 2 : 1;
        s.targets[(size_t) lt.target] = true;
    }
    if (s.rank == 0) throw Error(path + ": adapter has no LoRA tensors");
    s.alpha = lora_alpha(f.g, s.rank, path);
    // A target may skip layers, as llama.cpp's loader allows (PEFT's layers_to_transform): those
    // pairs load as B = 0, no change. Half a pair has no such meaning.
    for (const auto & [at, bits] : seen) {
        if (bits != 3) {
            throw Error(path + ": layer " + std::to_string(at.first) + " " + lora_target_tensor((LoraTarget) at.second) + " has lora_" +
                        (bits == 1 ? "a without its lora_b" : "b without its lora_a"));
        }
    }
    return s;
}

void save_adapter(const Adapter & a, const std::string & path) {
    GgufWrite out(bytes_of(a.params()), a.params().size());
    gguf_set_val_str(out.g, "general.architecture", a.arch().c_str());
    gguf_set_val_str(out.g, "general.type", "adapter");
    gguf_set_val_str(out.g, "general.name", "rrr-native LoRA");
    gguf_set_val_str(out.g, "adapter.type", "lora");
    gguf_set_val_f32(out.g, "adapter.lora.alpha", a.spec().alpha);
    for (const ggml_tensor * t : a.params()) out.add(t);
    write_gguf_atomic(out.g, path);
}

void load_adapter(Adapter & a, const std::string & path, const ModelWeights & w) {
    check_same_spec(a.spec(), read_adapter_spec(path, w), path);
    GgufFile f(path, true);  // adapter and state files are small
    for (ggml_tensor * p : a.params()) {
        const ggml_tensor * t = ggml_get_tensor(f.ctx, p->name);
        LoraFileTensor lt;
        if (t) {
            set_from_file(p, t, path);
        } else if (parse_lora_name(p->name, lt, path) && lt.is_b) {
            ggml_backend_tensor_memset(p, 0, 0, ggml_nbytes(p)); // a layer the adapter skips
        }
    }
}

void save_train_state(const Adapter & a, const AdamW & opt, const std::string & path) {
    std::vector<ggml_tensor *> all = a.params();
    all.insert(all.end(), opt.first_moments().begin(), opt.first_moments().end());
    all.insert(all.end(), opt.second_moments().begin(), opt.second_moments().end());
    GgufWrite out(bytes_of(all), all.size());
    gguf_set_val_str(out.g, "general.architecture", a.arch().c_str());
    gguf_set_val_str(out.g, "general.type", kStateType);
    gguf_set_val_i64(out.g, "rrr.state.version", kStateVersion);
    gguf_set_val_u32(out.g, "rrr.lora.rank", (uint32_t) a.spec().rank);
    gguf_set_val_f32(out.g, "adapter.lora.alpha", a.spec().alpha);
    gguf_set_val_str(out.g, "rrr.lora.targets", targets_str(a.spec()).c_str());
    gguf_set_val_i64(out.g, "rrr.opt.step", opt.steps());
    for (const ggml_tensor * t : all) out.add(t);
    write_gguf_atomic(out.g, path);
}

void load_train_state(Adapter & a, AdamW & opt, const std::string & path) {
    GgufFile f(path, true);  // adapter and state files are small
    const std::string type = gguf_has(f.g, "general.type") ? gguf_str(f.g, "general.type", path) : "";
    if (type != kStateType) throw Error(path + ": not an rrr-native training state (general.type is '" + type + "')");
    if (gguf_int(f.g, "rrr.state.version", path) != kStateVersion) throw Error(path + ": unsupported training-state version");
    const std::string arch = gguf_str(f.g, "general.architecture", path);
    if (arch != a.arch()) throw Error(path + ": training state for architecture '" + arch + "', but the model is '" + a.arch() + "'");
    AdapterSpec got = a.spec();
    got.rank = gguf_int(f.g, "rrr.lora.rank", path);
    got.alpha = gguf_float_or(f.g, "adapter.lora.alpha", 0.0f, path);
    got.targets = {};
    const std::string targets = gguf_str(f.g, "rrr.lora.targets", path);
    size_t start = 0;
    while (start <= targets.size()) {
        const size_t end = targets.find(',', start);
        const std::string name = targets.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!name.empty()) got.targets[(size_t) parse_lora_target(name, path)] = true;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    check_same_spec(a.spec(), got, path);
    auto load = [&](ggml_tensor * dst) {
        const ggml_tensor * t = ggml_get_tensor(f.ctx, dst->name);
        if (!t) throw Error(path + ": missing tensor '" + std::string(dst->name) + "'");
        set_from_file(dst, t, path);
    };
    for (ggml_tensor * t : a.params()) load(t);
    for (ggml_tensor * t : opt.first_moments()) load(t);
    for (ggml_tensor * t : opt.second_moments()) load(t);
    opt.set_steps(gguf_int(f.g, "rrr.opt.step", path));
}

} // namespace rrr

#include "merge.h"
#include "errors.h"
#include "gguf_meta.h"
#include "lora_gguf.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <sys/stat.h>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace rrr {

namespace {

// Another spelling of the same file (./m.gguf, an absolute path, a link) is the same file:
// renaming the output over it would replace the input.
bool same_file(const std::string & a, const std::string & b) {
    if (a == b) return true;
    struct stat sa, sb;
    return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

struct File {
    FILE * f = nullptr;
    File(const std::string & path, const char * mode) : f(std::fopen(path.c_str(), mode)) {}
    ~File() {
        if (f) std::fclose(f);
    }
};

bool can_store(ggml_type t) {
    if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) return true;
    return ggml_get_type_traits(t)->to_float != nullptr && !ggml_quantize_requires_imatrix(t);
}

struct Delta {
    const ggml_tensor * a = nullptr; // [n_in, r]
    const ggml_tensor * b = nullptr; // [r, n_out]
};

} // namespace

MergeResult merge_adapter(const std::string & model_path, const std::string & adapter_path, const std::string & out_path, ggml_type merged_type) {
    if (out_path.empty()) throw Error("--out: an output path is required");
    if (same_file(out_path, model_path) || same_file(out_path, adapter_path)) throw Error("--out " + out_path + ": it is the file of --model or --adapter");
    GgufFile base(model_path, false);
    GgufFile ad(adapter_path, true);

    const std::string arch = gguf_str(base.g, "general.architecture", model_path);
    const std::string type = gguf_has(ad.g, "general.type") ? gguf_str(ad.g, "general.type", adapter_path) : "";
    if (type != "adapter" || !gguf_has(ad.g, "adapter.type") || gguf_str(ad.g, "adapter.type", adapter_path) != "lora") {
        throw Error(adapter_path + ": not a LoRA adapter GGUF (expected general.type 'adapter', adapter.type 'lora')");
    }
    const std::string ad_arch = gguf_str(ad.g, "general.architecture", adapter_path);
    if (ad_arch != arch) throw Error(adapter_path + ": adapter for architecture '" + ad_arch + "', but " + model_path + " is '" + arch + "'");

    lora_alpha(ad.g, 1, adapter_path);  // refused before any output is written
    std::map<std::string, Delta> deltas; // base tensor name -> (A, B)
    for (int64_t i = 0; i < gguf_get_n_tensors(ad.g); ++i) {
        const std::string name = gguf_get_tensor_name(ad.g, i);
        LoraFileTensor lt;
        if (!parse_lora_name(name, lt, adapter_path)) continue;
        Delta & d = deltas[name.substr(0, name.size() - 7)];
        (lt.is_b ? d.b : d.a) = ggml_get_tensor(ad.ctx, name.c_str());
    }
    if (deltas.empty()) throw Error(adapter_path + ": adapter has no LoRA tensors");
    for (const auto & [name, d] : deltas) {
        const ggml_tensor * w = ggml_get_tensor(base.ctx, name.c_str());
        if (!w) throw Error(adapter_path + ": LoRA for '" + name + "', which " + model_path + " does not have (adapter for another model?)");
        if (!d.a || !d.b) throw Error(adapter_path + ": '" + name + "' has only one of lora_a / lora_b");
        if (d.a->ne[1] != d.b->ne[0]) {
            throw Error(adapter_path + ": '" + name + "' has lora_a of rank " + std::to_string(d.a->ne[1]) + " and lora_b of rank " + std::to_string(d.b->ne[0]));
        }
        if (d.a->ne[0] != w->ne[0] || d.b->ne[1] != w->ne[1]) {
            throw Error(adapter_path + ": LoRA shapes for '" + name + "' do not fit " + model_path + " (adapter for another model?)");
        }
    }

    // Output header: every key of the base, tensor types adjusted where the base type cannot be rewritten.
    gguf_context * out = gguf_init_empty();
    ggml_context * meta = nullptr;
    MergeResult res;
    const std::string tmp = temp_path_for(out_path);
    try {
        gguf_set_kv(out, base.g);
        const size_t slash = adapter_path.find_last_of('/');
        gguf_set_val_str(out, "rrr.merged_adapter", adapter_path.substr(slash == std::string::npos ? 0 : slash + 1).c_str());
        const int64_t n = gguf_get_n_tensors(base.g);
        ggml_init_params ip{ggml_tensor_overhead() * (size_t) (n + 1), nullptr, true};
        meta = ggml_init(ip);
        std::vector<ggml_type> out_type((size_t) n);
        ggml_type lowest = GGML_TYPE_COUNT;
        for (int64_t i = 0; i < n; ++i) {
            const ggml_tensor * src = ggml_get_tensor(base.ctx, gguf_get_tensor_name(base.g, i));
            ggml_type t = src->type;
            if (deltas.count(src->name)) {
                if (merged_type != GGML_TYPE_COUNT) {
                    t = merged_type;
                } else if (!can_store(t)) {
                    t = GGML_TYPE_F16;
                    ++res.requantized_f16;
                }
                if (ggml_is_quantized(t)) {
                    ++res.quantized;
                    const auto bits = [](ggml_type q) { return (double) ggml_type_size(q) / (double) ggml_blck_size(q); };
                    if (lowest == GGML_TYPE_COUNT || bits(t) < bits(lowest)) lowest = t;
                }
            }
            out_type[(size_t) i] = t;
            ggml_tensor * dst = ggml_new_tensor(meta, t, GGML_MAX_DIMS, src->ne);
            ggml_set_name(dst, src->name);
            gguf_add_tensor(out, dst);
        }

        if (lowest != GGML_TYPE_COUNT) res.quantized_type = ggml_type_name(lowest);
        File in(model_path, "rb");
        File fo(tmp, "wb");
        if (!in.f) throw Error(model_path + ": cannot open for reading");
        if (!fo.f) throw Error(out_path + ": cannot open for writing");
        std::vector<uint8_t> header(gguf_get_meta_size(out));
        gguf_get_meta_data(out, header.data());
        bool ok = std::fwrite(header.data(), 1, header.size(), fo.f) == header.size();
        const size_t align = gguf_get_alignment(out);
        const size_t data_off = gguf_get_data_offset(base.g);
        std::vector<uint8_t> buf, packed;
        std::vector<float> w32, a32, b32;
        for (int64_t i = 0; ok && i < n; ++i) {
            const ggml_tensor * src = ggml_get_tensor(base.ctx, gguf_get_tensor_name(base.g, i));
            buf.resize(ggml_nbytes(src));
            if (fseeko(in.f, (off_t) (data_off + gguf_get_tensor_offset(base.g, i)), SEEK_SET) != 0 ||
                std::fread(buf.data(), 1, buf.size(), in.f) != buf.size()) {
                throw Error(model_path + ": truncated file (tensor '" + std::string(src->name) + "')");
            }
            const uint8_t * data = buf.data();
            size_t size = buf.size();
            auto it = deltas.find(src->name);
            if (it != deltas.end()) {
                const int64_t n_in = src->ne[0], n_out = src->ne[1], r = it->second.a->ne[1];
                const float s = lora_alpha(ad.g, r, adapter_path) / (float) r;
                w32.resize((size_t) (n_in * n_out));
                if (src->type == GGML_TYPE_F32) std::memcpy(w32.data(), data, w32.size() * sizeof(float));
                else ggml_get_type_traits(src->type)->to_float(data, w32.data(), (int64_t) w32.size());
                a32 = lora_tensor_f32(it->second.a, adapter_path);
                b32 = lora_tensor_f32(it->second.b, adapter_path);
                // Row o of W (its n_in inputs) gains s * sum_j B[o][j] * A[j][:].
                for (int64_t o = 0; o < n_out; ++o) {
                    float * row = &w32[(size_t) (o * n_in)];
                    for (int64_t j = 0; j < r; ++j) {
                        const float c = s * b32[(size_t) (o * r + j)];
                        const float * arow = &a32[(size_t) (j * n_in)];
                        for (int64_t k = 0; k < n_in; ++k) row[k] += c * arow[k];
                    }
                }
                const ggml_type t = out_type[(size_t) i];
                packed.resize(ggml_row_size(t, n_in) * (size_t) n_out);
                if (t == GGML_TYPE_F32) std::memcpy(packed.data(), w32.data(), packed.size());
                else ggml_quantize_chunk(t, w32.data(), packed.data(), 0, n_out, n_in, nullptr);
                data = packed.data();
                size = packed.size();
                ++res.merged;
            }
            ok = std::fwrite(data, 1, size, fo.f) == size;
            static const uint8_t zeros[64] = {0};
            const size_t pad = GGML_PAD(size, align) - size;
            ok = ok && std::fwrite(zeros, 1, pad, fo.f) == pad;
        }
        ok = ok && std::fflush(fo.f) == 0;
        if (!ok) throw Error(out_path + ": write failed (disk full?)");
        std::fclose(fo.f);
        fo.f = nullptr;
        if (std::rename(tmp.c_str(), out_path.c_str()) != 0) throw Error(out_path + ": cannot rename the temporary file into place");
        FILE * check = std::fopen(out_path.c_str(), "rb");
        if (check) {
            fseeko(check, 0, SEEK_END);
            res.bytes = (uint64_t) ftello(check);
            std::fclose(check);
        }
    } catch (...) {
        std::remove(tmp.c_str());
        gguf_free(out);
        if (meta) ggml_free(meta);
        throw;
    }
    gguf_free(out);
    ggml_free(meta);
    return res;
}

} // namespace rrr

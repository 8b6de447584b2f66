#include "reference.h"
#include "errors.h"
#include "gguf_meta.h"

#include <cstring>
#include <thread>

#include "llama.h"

namespace rrr {

llama_context_params reference_context_params(int n_threads, bool flash_attn, bool f32_kv, bool gpu) {
    llama_context_params cp = llama_context_default_params();
    const int threads = n_threads > 0 ? n_threads : (int) std::max(1u, std::thread::hardware_concurrency());
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn_type = flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (f32_kv) {
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
    }
    cp.offload_kqv = gpu;
    cp.no_perf = true;
    return cp;
}

ReferenceModel::ReferenceModel(const std::string & path, const ReferenceOptions & opt) : path_(path), opt_(opt) {
    check_gguf_header(path);
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = opt.gpu ? 999 : 0;
    mp.use_extra_bufts = opt.repack;
    model_ = llama_model_load_from_file(path.c_str(), mp);
    if (!model_) throw Error(path + ": libllama could not load this model");
    llama_context_params cp = reference_context_params(opt.n_threads, opt.flash_attn, opt.f32_kv, opt.gpu);
    cp.n_ctx = (uint32_t) opt.n_ctx;
    cp.n_batch = (uint32_t) opt.n_ctx;
    cp.n_ubatch = (uint32_t) opt.n_ctx;
    cp.n_seq_max = 1;
    ctx_ = llama_init_from_model(model_, cp);
    if (!ctx_) {
        llama_model_free(model_);
        throw Error(path + ": libllama could not create a context (n_ctx " + std::to_string(opt.n_ctx) + ")");
    }
}

ReferenceModel::~ReferenceModel() {
    if (ctx_) llama_free(ctx_);
    if (adapter_) llama_adapter_lora_free(adapter_);
    if (model_) llama_model_free(model_);
}

void ReferenceModel::set_adapter(const std::string & path, float scale) {
    llama_set_adapters_lora(ctx_, nullptr, 0, nullptr);
    if (adapter_) llama_adapter_lora_free(adapter_);
    adapter_ = nullptr;
    if (path.empty()) return;
    {
        // libllama asserts (aborting the process) where the alpha is stored as another type.
        GgufFile f(path, false);
        const int64_t id = gguf_find_key(f.g, "adapter.lora.alpha");
        if (id >= 0 && gguf_get_kv_type(f.g, id) != GGUF_TYPE_FLOAT32) {
            throw Error(path + ": adapter.lora.alpha is stored as " + gguf_type_name(gguf_get_kv_type(f.g, id)) + "; libllama reads only f32");
        }
    }
    adapter_ = llama_adapter_lora_init(model_, path.c_str());
    if (!adapter_) throw Error(path + ": libllama rejected this LoRA adapter (RRR_VERBOSE=1 shows why)");
    if (llama_set_adapters_lora(ctx_, &adapter_, 1, &scale) != 0) throw Error(path + ": libllama could not apply this LoRA adapter");
}

ForwardResult ReferenceModel::logits(const std::vector<std::vector<int32_t>> & seqs) {
    const llama_vocab * vocab = llama_model_get_vocab(model_);
    ForwardResult r;
    r.n_vocab = llama_vocab_n_tokens(vocab);
    r.row_start.push_back(0);
    for (const auto & seq : seqs) {
        if (seq.empty() || (int) seq.size() > opt_.n_ctx) {
            throw Error("reference: sequence length " + std::to_string(seq.size()) + " outside [1, " + std::to_string(opt_.n_ctx) + "]");
        }
        llama_memory_clear(llama_get_memory(ctx_), true);
        llama_batch batch = llama_batch_init((int32_t) seq.size(), 0, 1);
        for (size_t i = 0; i < seq.size(); ++i) {
            batch.token[i] = seq[i];
            batch.pos[i] = (llama_pos) i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        batch.n_tokens = (int32_t) seq.size();
        const int32_t rc = llama_decode(ctx_, batch);
        llama_batch_free(batch);
        if (rc != 0) throw Error("reference: llama_decode failed with code " + std::to_string(rc));
        const size_t base = r.logits.size();
        r.logits.resize(base + seq.size() * r.n_vocab);
        for (size_t i = 0; i < seq.size(); ++i) {
            std::memcpy(&r.logits[base + i * r.n_vocab], llama_get_logits_ith(ctx_, (int32_t) i), r.n_vocab * sizeof(float));
        }
        r.row_start.push_back(r.row_start.back() + (int64_t) seq.size());
    }
    return r;
}

} // namespace rrr

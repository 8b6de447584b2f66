#include "reference_decode.h"
#include "reference.h"
#include "clock.h"
#include "errors.h"
#include "gguf_meta.h"

#include <algorithm>
#include <memory>
#include <thread>

#include "llama.h"

namespace rrr {

namespace {

int32_t argmax(const float * v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i) if (v[i] > v[best]) best = i;
    return best;
}

struct Batch {
    llama_batch b;
    Batch(int32_t n_tokens, int32_t n_seq_max) : b(llama_batch_init(n_tokens, 0, n_seq_max)) {}
    ~Batch() { llama_batch_free(b); }
};

struct Ctx {
    llama_context * c = nullptr;
    ~Ctx() { if (c) llama_free(c); }
};

} // namespace

ReferenceDecoder::ReferenceDecoder(const std::string & path, const RefDecodeOptions & opt) : path_(path), opt_(opt) {
    check_gguf_header(path);
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = opt.gpu ? 999 : 0;
    model_ = llama_model_load_from_file(path.c_str(), mp);
    if (!model_) throw Error(path + ": libllama could not load this model");
}

ReferenceDecoder::~ReferenceDecoder() {
    if (model_) llama_model_free(model_);
}

RefDecodeResult ReferenceDecoder::greedy(const std::vector<RefGroup> & groups, int32_t max_tokens, bool ignore_eos) {
    if (groups.empty()) throw Error("reference decode: no prompts");
    if (max_tokens < 1) throw Error("reference decode: max_tokens must be >= 1");
    int64_t n_seqs = 0, shared_cells = 0, longest = 0;
    for (const RefGroup & g : groups) {
        if (g.prompt.empty() || g.n < 1) throw Error("reference decode: empty prompt or n < 1");
        n_seqs += g.n;
        shared_cells += (int64_t) g.prompt.size() + (int64_t) g.n * max_tokens;
        longest = std::max<int64_t>(longest, (int64_t) g.prompt.size() + max_tokens);
    }
    // Separate streams hold the prompt once per sequence, in equal slices of the context.
    const int64_t cells = opt_.kv_unified ? shared_cells : n_seqs * (((longest + 255) / 256) * 256);
    const int32_t n_ubatch = std::max(1, opt_.n_ubatch);

    llama_context_params cp = reference_context_params(opt_.n_threads, opt_.flash_attn, opt_.f32_kv, opt_.gpu);
    cp.n_ctx = (uint32_t) (((cells + 255) / 256) * 256);
    cp.n_batch = (uint32_t) n_ubatch;
    cp.n_ubatch = (uint32_t) n_ubatch;
    cp.n_seq_max = (uint32_t) n_seqs;
    cp.kv_unified = opt_.kv_unified;
    Ctx ctx;
    ctx.c = llama_init_from_model(model_, cp);
    if (!ctx.c) throw Error(path_ + ": libllama could not create a context of " + std::to_string(cp.n_ctx) + " cells");

    const llama_vocab * vocab = llama_model_get_vocab(model_);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    RefDecodeResult r;
    r.n_ctx = llama_n_ctx(ctx.c);
    {
        const std::string arch = [&] {
            char buf[128];
            return llama_model_meta_val_str(model_, "general.architecture", buf, sizeof(buf)) > 0 ? std::string(buf) : std::string();
        }();
        char buf[64];
        int64_t head_dim = llama_model_n_embd(model_) / llama_model_n_head(model_);
        if (llama_model_meta_val_str(model_, (arch + ".attention.key_length").c_str(), buf, sizeof(buf)) > 0) head_dim = std::atoll(buf);
        const ggml_type t = opt_.f32_kv ? GGML_TYPE_F32 : GGML_TYPE_F16;
        r.kv_bytes = 2 * (size_t) llama_model_n_layer(model_) * ggml_row_size(t, head_dim * llama_model_n_head_kv(model_) * r.n_ctx);
    }
    r.tokens.resize(groups.size());

    struct Live {
        size_t g;
        int j;
        llama_seq_id seq;
        llama_pos pos;
        bool done = false;
    };
    std::vector<Live> seqs;
    std::vector<llama_seq_id> first(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
        first[g] = (llama_seq_id) seqs.size();
        r.tokens[g].resize((size_t) groups[g].n);
        for (int j = 0; j < groups[g].n; ++j) seqs.push_back({g, j, (llama_seq_id) seqs.size(), (llama_pos) groups[g].prompt.size()});
    }
    llama_memory_t mem = llama_get_memory(ctx.c);
    auto accept = [&](Live & s, const float * row) {
        const int32_t tok = argmax(row, n_vocab);
        auto & out = r.tokens[s.g][(size_t) s.j];
        out.push_back(tok);
        ++r.generated;
        if ((!ignore_eos && llama_vocab_is_eog(vocab, tok)) || (int32_t) out.size() >= max_tokens) {
            s.done = true;
            llama_memory_seq_rm(mem, s.seq, -1, -1);
        }
    };
    auto decode = [&](Batch & b) {
        const int32_t rc = llama_decode(ctx.c, b.b);
        if (rc != 0) throw Error("reference decode: llama_decode failed with code " + std::to_string(rc));
    };

    // Prefill: each prompt once, in its group's first sequence; llama_memory_seq_cp then gives it to
    // the others (shared cells in a unified cache, a copy into each stream otherwise, made at the
    // next llama_decode).
    auto t0 = Clock::now();
    Batch pb(n_ubatch, (int32_t) n_seqs);
    std::vector<std::pair<size_t, int32_t>> outs; // (group, batch index of its last prompt token)
    auto flush = [&] {
        if (pb.b.n_tokens == 0) return;
        decode(pb);
        r.prefill_tokens += pb.b.n_tokens;
        for (auto [g, i] : outs) {
            // The group's whole prompt is in the cache now; copy before accept() can free it.
            for (int j = 1; j < groups[g].n; ++j) llama_memory_seq_cp(mem, first[g], first[g] + j, -1, -1);
            const float * row = llama_get_logits_ith(ctx.c, i);
            for (int j = 0; j < groups[g].n; ++j) accept(seqs[(size_t) first[g] + j], row);
        }
        outs.clear();
        pb.b.n_tokens = 0;
    };
    for (size_t g = 0; g < groups.size(); ++g) {
        const auto & prompt = groups[g].prompt;
        for (size_t i = 0; i < prompt.size(); ++i) {
            const int32_t k = pb.b.n_tokens++;
            pb.b.token[k] = prompt[i];
            pb.b.pos[k] = (llama_pos) i;
            pb.b.n_seq_id[k] = 1;
            pb.b.seq_id[k][0] = first[g];
            pb.b.logits[k] = i + 1 == prompt.size();
            if (pb.b.logits[k]) outs.push_back({g, k});
            if (pb.b.n_tokens == n_ubatch) flush();
        }
    }
    flush();
    r.prefill_ms = ms_since(t0);

    t0 = Clock::now();
    Batch db(std::max<int32_t>(n_ubatch, (int32_t) n_seqs), 1);
    std::vector<Live *> live;
    for (;;) {
        live.clear();
        for (Live & s : seqs) if (!s.done) live.push_back(&s);
        if (live.empty()) break;
        for (size_t off = 0; off < live.size(); off += (size_t) n_ubatch) {
            const size_t end = std::min(live.size(), off + (size_t) n_ubatch);
            db.b.n_tokens = 0;
            for (size_t k = off; k < end; ++k) {
                Live & s = *live[k];
                const int32_t i = db.b.n_tokens++;
                db.b.token[i] = r.tokens[s.g][(size_t) s.j].back();
                db.b.pos[i] = s.pos++;
                db.b.n_seq_id[i] = 1;
                db.b.seq_id[i][0] = s.seq;
                db.b.logits[i] = 1;
            }
            decode(db);
            r.decode_tokens += db.b.n_tokens;
            for (size_t k = off; k < end; ++k) accept(*live[k], llama_get_logits_ith(ctx.c, (int32_t) (k - off)));
        }
    }
    r.decode_ms = ms_since(t0);
    return r;
}

} // namespace rrr

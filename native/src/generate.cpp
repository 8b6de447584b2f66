#include "generate.h"
#include "clock.h"
#include "decode.h"
#include "errors.h"
#include "parallel.h"

#include <algorithm>

namespace rrr {

namespace {

constexpr int64_t kCellPad = 256;
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// One live sequence: where it is, how it samples, what it produced.
struct Seq {
    int id = 0;          // cache sequence id
    size_t group = 0;
    int sample = 0;      // its number in the group
    int32_t next_pos = 0;
    bool done = false;
    bool by_token = false; // stopped by a token rather than a string or the length limit
    std::string text;    // pieces so far, for stop-string detection
    GenOutput out;
    std::unique_ptr<SequenceSampler> sampler;
};

} // namespace

Generator::Generator(const ModelWeights & w, const Vocab & vocab, Backends & b, const GeneratorOptions & opt)
    : w_(w), vocab_(vocab), b_(b), opt_(opt) {
    const ModelConfig & c = w.config();
    if (opt_.max_seqs < 1) throw Error("maxSeqs: " + std::to_string(opt_.max_seqs) + " is out of range (expected >= 1)");
    if (opt_.n_ctx < 2) throw Error("nCtx: " + std::to_string(opt_.n_ctx) + " is out of range (expected >= 2)");
    if (opt_.n_ctx > c.n_ctx_train) {
        throw Error("nCtx: " + std::to_string(opt_.n_ctx) + " exceeds the model's training context of " + std::to_string(c.n_ctx_train) + " tokens");
    }
    if (opt_.n_ubatch < 1) throw Error("nUbatch: must be >= 1");
    const int64_t full = (int64_t) opt_.max_seqs * opt_.n_ctx;
    const bool streams = kv_streams_ = opt_.kv_streams < 0 ? opt_.n_cells <= 0 && opt_.max_seqs > 1 : opt_.kv_streams != 0;
    if (streams && opt_.n_cells > 0 && opt_.n_cells != full) {
        throw Error("nCells: " + std::to_string(opt_.n_cells) + " sizes a unified KV cache; the streams layout holds maxSeqs × nCtx = " +
                    std::to_string(full) + " cells (leave nCells out, or ask for kvLayout unified)");
    }
    if (opt_.n_cells <= 0) opt_.n_cells = full;
    // Whole 256-cell tiles per stream, as llama.cpp pads its context: CUDA's flash attention
    // takes its vector kernel and grouped-query path, and skips a stream's unused tail, only
    // when the window is a multiple of 256 cells.
    const int64_t per_stream = streams ? round_up(opt_.n_ctx, kCellPad) : round_up(opt_.n_cells, kCellPad);  // unified: one stream
    // Auto: on a GPU, where it has a kernel for these heads (else the op would go to the CPU).
    flash_attn_ = opt_.flash_attn < 0 ? b.is_gpu() && flash_attn_supported(b.primary(), c) : opt_.flash_attn != 0;
    device_sampling_ = opt_.device_sampling < 0 ? b.is_gpu() : opt_.device_sampling != 0;
    KvCacheOptions ko;
    ko.n_cells = streams ? per_stream * opt_.max_seqs : per_stream;
    ko.n_seqs = opt_.max_seqs;
    ko.n_streams = streams ? opt_.max_seqs : 1;
    ko.type = opt_.kv_type;
    ko.v_trans = !flash_attn_;
    cache_ = std::make_unique<KvCache>(c, b.primary(), ko);
}

void Generator::check(const std::vector<GenGroup> & groups, const GenParams & p) const {
    validate(p.sampling);
    if (p.max_tokens < 1) throw Error("maxTokens: " + std::to_string(p.max_tokens) + " is out of range (expected >= 1)");
    const int64_t n_vocab = w_.config().n_vocab;
    int64_t seqs = 0, cells = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
        const GenGroup & gr = groups[g];
        const int64_t P = (int64_t) gr.prompt.size();
        if (P == 0) throw Error("request " + std::to_string(gr.request) + ": the prompt is empty");
        if (gr.n < 1) throw Error("request " + std::to_string(gr.request) + ": n must be >= 1 (got " + std::to_string(gr.n) + ")");
        if (!gr.suffixes.empty() && (int) gr.suffixes.size() != gr.n) {
            throw Error("request " + std::to_string(gr.request) + ": " + std::to_string(gr.suffixes.size()) + " suffixes for " +
                        std::to_string(gr.n) + " samples");
        }
        auto in_vocab = [&](const std::vector<int32_t> & toks) {
            for (int32_t t : toks) {
                if (t < 0 || t >= n_vocab) {
                    throw Error("request " + std::to_string(gr.request) + ": token id " + std::to_string(t) +
                                " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
                }
            }
        };
        in_vocab(gr.prompt);
        for (size_t j = 0; j < gr.suffixes.size(); ++j) {
            if (gr.suffixes[j].empty()) throw Error("request " + std::to_string(gr.request) + ": suffix " + std::to_string(j) + " is empty");
            in_vocab(gr.suffixes[j]);
        }
        const int64_t L = longest_prompt(gr);
        if (L + p.max_tokens > opt_.n_ctx) {
            throw Error("context overflow: request " + std::to_string(gr.request) + " has a " + std::to_string(L) +
                        "-token prompt + maxTokens " + std::to_string(p.max_tokens) + " = " + std::to_string(L + p.max_tokens) +
                        " > nCtx " + std::to_string(opt_.n_ctx));
        }
        seqs += gr.n;
        cells += cells_needed(gr, p.max_tokens);
    }
    if (seqs > opt_.max_seqs) {
        throw Error("batch of " + std::to_string(seqs) + " sequences exceeds maxSeqs " + std::to_string(opt_.max_seqs));
    }
    if (cache_->n_streams() == 1 && cells > cache_->n_cells()) {
        throw Error("batch needs up to " + std::to_string(cells) + " KV cells, the cache has " + std::to_string(cache_->n_cells()));
    }
}

std::vector<std::vector<GenOutput>> Generator::run(const std::vector<GenGroup> & groups, const GenParams & p,
                                                   const std::function<void(int64_t)> & progress, GenStats & st,
                                                   const std::function<bool()> & stop) {
    check(groups, p);
    const int64_t n_vocab = w_.config().n_vocab;
    StepOptions so;  // prefill: a group's one row serves all its samples, so logits come back
    so.flash_attn = flash_attn_;
    StepOptions ds = so;  // decode: one row per sequence
    if (device_sampling_) {
        ds.head = head_mode_for(p.sampling, n_vocab);
        ds.temperature = p.sampling.temperature;
    }
    size_t max_stop = 0;
    for (const std::string & s : p.stop) max_stop = std::max(max_stop, s.size());

    cache_->clear();
    // The kept graph may name another adapter, and the scheduler may have run other graphs.
    decoder_.invalidate();
    decoder_.reset_placement();
    struct Release {
        Decoder & d;
        ~Release() { d.invalidate(); }
    } release{decoder_};
    // Sequence g is group g's first sample, the one its prompt is prefilled into; the groups'
    // other samples follow. With streams, the prompts then lie in neighbouring streams and
    // prefill batches span few of them.
    std::vector<int> more(groups.size());  // sequence of group g's second sample
    int n_seqs = (int) groups.size();
    for (size_t g = 0; g < groups.size(); ++g) {
        more[g] = n_seqs;
        n_seqs += groups[g].n - 1;
    }
    auto seq_of = [&](size_t g, int j) { return j == 0 ? (int) g : more[g] + j - 1; };
    std::vector<Seq> seqs((size_t) n_seqs);
    for (size_t g = 0; g < groups.size(); ++g) {
        for (int j = 0; j < groups[g].n; ++j) {
            Seq & s = seqs[(size_t) seq_of(g, j)];
            s.id = seq_of(g, j);
            s.group = g;
            s.sample = j;
            std::vector<int32_t> read = groups[g].prompt;  // what the repetition penalty looks back on
            if (!groups[g].suffixes.empty()) read.insert(read.end(), groups[g].suffixes[(size_t) j].begin(), groups[g].suffixes[(size_t) j].end());
            s.next_pos = (int32_t) read.size();
            s.sampler = std::make_unique<SequenceSampler>(p.sampling, groups[g].request, groups[g].first_sample + (uint64_t) j, read);
        }
    }

    // Decides whether `s` stops after its newest token; frees its private cells when it does.
    auto finish_check = [&](Seq & s) {
        const int32_t tok = s.out.tokens.back();
        const size_t before = s.text.size();
        s.text += vocab_.piece(tok, false);
        if (!p.ignore_eos && vocab_.is_eog(tok)) {
            s.out.finish = "eos";
            s.by_token = true;
        } else if (std::find(p.stop_tokens.begin(), p.stop_tokens.end(), tok) != p.stop_tokens.end()) {
            s.out.finish = "stop";
            s.by_token = true;
        } else if (max_stop > 0) {
            const size_t from = before >= max_stop ? before - max_stop + 1 : 0;
            for (const std::string & stop : p.stop) {
                if (!stop.empty() && s.text.find(stop, from) != std::string::npos) s.out.finish = "stop";
            }
        }
        if (s.out.finish.empty() && (int32_t) s.out.tokens.size() >= p.max_tokens) s.out.finish = "length";
        if (!s.out.finish.empty()) {
            s.done = true;
            cache_->seq_remove(s.id);
        }
    };
    // Samples every (sequence, logits row) pair: each row's statistics once, then the draws,
    // both spread over the CPU threads (idle between graph computations); stop checks after.
    std::vector<RowStats> row_st;
    const int threads = b_.n_threads();
    auto sample_rows = [&](const std::vector<std::pair<Seq *, size_t>> & picks, size_t n_rows, const std::vector<float> & lg) {
        const auto ts = Clock::now();
        // A row read by one sequence only (every decode row) gets its statistics inside the draw.
        const bool own_rows = picks.size() == n_rows;
        row_st.resize(own_rows ? 0 : n_rows);
        if (!own_rows) parallel_for((int64_t) n_rows, threads, [&](int64_t r) { row_st[r] = row_stats(&lg[(size_t) r * n_vocab], n_vocab); });
        parallel_for((int64_t) picks.size(), threads, [&](int64_t i) {
            auto [sq, row] = picks[(size_t) i];
            const float * row_logits = &lg[row * (size_t) n_vocab];
            const Sampled r = own_rows ? sq->sampler->sample(row_logits, n_vocab) : sq->sampler->sample(row_logits, n_vocab, row_st[row]);
            sq->out.tokens.push_back(r.token);
            sq->out.logprobs.push_back(r.logprob);
        });
        for (auto [sq, row] : picks) {
            ++st.generated;
            finish_check(*sq);
        }
        st.sample_ms += ms_since(ts);
    };
    std::vector<std::pair<Seq *, size_t>> picks;
    // Rows already sampled by the graph: record them as the host sampler would have.
    auto take_sampled = [&](const std::vector<Seq *> & in_step, const StepResult & r) {
        const auto ts = Clock::now();
        for (size_t k = 0; k < in_step.size(); ++k) {
            Seq & sq = *in_step[k];
            sq.sampler->accept(r.ids[k]);
            sq.out.tokens.push_back(r.ids[k]);
            sq.out.logprobs.push_back(r.logprobs[k]);
            ++st.generated;
            finish_check(sq);
        }
        st.sample_ms += ms_since(ts);
    };
    std::vector<float> uniforms;

    // ---- prefill: every prompt once, its cells shared by all samples of the group; then each
    // sample's own suffix, if the group has them ----
    auto t0 = Clock::now();
    std::vector<StepToken> batch;
    // Who samples from each logits row of `batch`, in order: (group, kAll) all samples of the
    // group (its prompt's last token), (group, sequence) that one sequence (its suffix's last).
    constexpr int kAll = -1, kNone = -2;
    std::vector<std::pair<size_t, int>> batch_outs;
    StepResult res;
    // With streams a batch's slots are the streams from its first sequence's to its last's (gaps
    // included), each padded to the most tokens one stream has in it; these track that, to cap
    // the padding (a long prompt beside short ones, suffixes between groups without).
    int first_seq = -1;
    int64_t slot_len = 0, slot_max = 0;
    auto flush_prefill = [&] {
        first_seq = -1;
        slot_len = slot_max = 0;
        if (batch.empty()) return;
        decoder_.step(w_, lora_, b_, *cache_, batch, so, uniforms, res);
        st.prefill_tokens += (int64_t) batch.size();
        ++st.prefill_steps;
        picks.clear();
        for (size_t k = 0; k < batch_outs.size(); ++k) {
            const auto [g, seq] = batch_outs[k];
            if (seq != kAll) {
                picks.push_back({&seqs[(size_t) seq], k});
                continue;
            }
            for (int j = 0; j < groups[g].n; ++j) picks.push_back({&seqs[(size_t) seq_of(g, j)], k});
        }
        sample_rows(picks, batch_outs.size(), res.logits);
        batch.clear();
        batch_outs.clear();
    };
    const bool streams = cache_->n_streams() > 1;
    const int64_t sc = cache_->stream_cells();
    // Adds the tokens at positions [from, from + toks.size()) of sequence `seq` in `cells`; the
    // last one's logits row goes to `out` unless that is (_, kNone).
    auto prefill = [&](const std::vector<int32_t> & toks, int32_t from, const std::vector<int64_t> & cells, int seq, std::pair<size_t, int> out) {
        if (streams) slot_len = 0;
        for (size_t i = 0; i < toks.size(); ++i) {
            if (streams) {
                // Padded query rows cost attention work and memory: slots × their longest stay
                // within a batch, so no attention buffer outgrows one stream's.
                const int64_t n_slots = first_seq < 0 ? 1 : seq - first_seq + 1;
                if (!batch.empty() && std::max(slot_max, slot_len + 1) * n_slots > opt_.n_ubatch) flush_prefill();
                if (first_seq < 0) first_seq = seq;
                slot_max = std::max(slot_max, ++slot_len);
            }
            const bool last = i + 1 == toks.size() && out.second != kNone;
            batch.push_back({toks[i], from + (int32_t) i, cells[i], seq, last});
            if (last) batch_outs.push_back(out);
            if ((int64_t) batch.size() == opt_.n_ubatch) flush_prefill();
        }
    };
    // With streams a sequence's cell for position p is its stream's p-th: the prompt goes into
    // the first sample's stream and is copied to the others' afterwards.
    std::vector<int> copy_src, copy_dst;
    int64_t copy_len = 0;
    bool any_suffix = false;
    for (size_t g = 0; g < groups.size(); ++g) {
        const auto & prompt = groups[g].prompt;
        const int64_t P = (int64_t) prompt.size();
        const int owner = seq_of(g, 0);
        std::vector<int64_t> cells;
        if (streams) {
            for (int64_t i = 0; i < P; ++i) cells.push_back((int64_t) owner * sc + i);
        } else {
            cells = cache_->allocate(P);
        }
        for (int64_t i = 0; i < P; ++i) {
            cache_->occupy(cells[i], (int32_t) i, owner);
            if (streams) continue;
            for (int j = 1; j < groups[g].n; ++j) cache_->add_seq(cells[i], seq_of(g, j));
        }
        if (streams && groups[g].n > 1) {
            copy_len = std::max(copy_len, P);
            for (int j = 1; j < groups[g].n; ++j) {
                const int dst = seq_of(g, j);
                copy_src.push_back(owner);
                copy_dst.push_back(dst);
                for (int64_t i = 0; i < P; ++i) cache_->occupy((int64_t) dst * sc + i, (int32_t) i, dst);
            }
        }
        any_suffix = any_suffix || !groups[g].suffixes.empty();
        // A group with suffixes samples from its suffixes' rows, not from its prompt's last.
        prefill(prompt, 0, cells, owner, {g, groups[g].suffixes.empty() ? kAll : kNone});
    }
    flush_prefill();
    decoder_.copy_prefix(b_, *cache_, copy_len, copy_src, copy_dst);
    if (any_suffix) {
        // Sequence by sequence, so that a batch spans neighbouring streams.
        for (Seq & s : seqs) {
            const GenGroup & gr = groups[s.group];
            if (gr.suffixes.empty()) continue;
            const auto & suffix = gr.suffixes[(size_t) s.sample];
            const int32_t from = (int32_t) gr.prompt.size();
            std::vector<int64_t> cells;
            if (streams) {
                for (size_t i = 0; i < suffix.size(); ++i) cells.push_back((int64_t) s.id * sc + from + (int64_t) i);
            } else {
                cells = cache_->allocate((int64_t) suffix.size());
            }
            for (size_t i = 0; i < suffix.size(); ++i) cache_->occupy(cells[i], from + (int32_t) i, s.id);
            prefill(suffix, from, cells, s.id, {s.group, s.id});
        }
        flush_prefill();
    }
    st.prefill_ms += ms_since(t0);
    if (progress) progress(st.generated);
    if (stop && stop()) throw StopRequested();

    // ---- decode: one token for every live sequence per step ----
    t0 = Clock::now();
    {
        int64_t live_n = 0, cells = 0;
        for (size_t g = 0; g < groups.size(); ++g) {
            cells = streams ? std::max(cells, longest_prompt(groups[g]) + p.max_tokens) : cells + cells_needed(groups[g], p.max_tokens);
        }
        for (const Seq & s : seqs) live_n += s.done ? 0 : 1;
        if (live_n > 0) decoder_.reserve(w_, lora_, b_, *cache_, std::min<int64_t>(live_n, opt_.n_ubatch), cells, ds);
    }
    std::vector<Seq *> live, chunk;
    for (;;) {
        live.clear();
        for (Seq & s : seqs) if (!s.done) live.push_back(&s);
        if (live.empty()) break;
        for (size_t off = 0; off < live.size(); off += (size_t) opt_.n_ubatch) {
            chunk.assign(live.begin() + (std::ptrdiff_t) off, live.begin() + (std::ptrdiff_t) std::min(live.size(), off + (size_t) opt_.n_ubatch));
            std::vector<int64_t> cells;
            if (streams) {
                for (Seq * sq : chunk) cells.push_back((int64_t) sq->id * sc + sq->next_pos);
            } else {
                cells = cache_->allocate((int64_t) chunk.size());
            }
            batch.clear();
            for (size_t k = 0; k < chunk.size(); ++k) {
                Seq & s = *chunk[k];
                cache_->occupy(cells[k], s.next_pos, s.id);
                batch.push_back({s.out.tokens.back(), s.next_pos, cells[k], s.id, true});
                ++s.next_pos;
            }
            uniforms.clear();
            if (ds.head == HeadMode::temperature) {
                for (Seq * sq : chunk) uniforms.push_back((float) sq->sampler->draw());
            }
            decoder_.step(w_, lora_, b_, *cache_, batch, ds, uniforms, res);
            st.decode_tokens += (int64_t) batch.size();
            if (ds.head != HeadMode::logits) {
                take_sampled(chunk, res);
                continue;
            }
            picks.clear();
            for (size_t k = 0; k < chunk.size(); ++k) picks.push_back({chunk[k], k});
            sample_rows(picks, chunk.size(), res.logits);
        }
        ++st.steps;
        if (progress) progress(st.generated);
        if (stop && stop()) throw StopRequested();
    }
    st.decode_ms += ms_since(t0);
    st.placement = decoder_.placement();

    std::vector<std::vector<GenOutput>> result(groups.size());
    for (Seq & s : seqs) {
        // A token that ended generation (end-of-generation, stop token) stays in `tokens` with
        // its log-prob but not in `text`.
        std::vector<int32_t> shown = s.out.tokens;
        if (s.by_token) shown.pop_back();
        std::string text = vocab_.detokenize(shown, false);
        if (s.out.finish == "stop" && !s.by_token) {
            size_t cut = text.size();
            for (const std::string & stop : p.stop) {
                if (!stop.empty()) cut = std::min(cut, text.find(stop));
            }
            text.resize(cut);
        }
        s.out.text = std::move(text);
        result[s.group].push_back(std::move(s.out));
    }
    cache_->clear();
    return result;
}

} // namespace rrr

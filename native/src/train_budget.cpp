// The memory plan of a training step: the compute buffer and work it plans for a batch, and the
// micro-batches and kept layers that fit a memory budget at the least planned time.
#include "train_step.h"
#include "errors.h"
#include "micro_batches.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

namespace rrr {

namespace {

// "1.5 MiB", "312 MiB": small budgets (a test's, a CPU's) would read as 0 or 1 MiB in whole MiB.
std::string mib_text(size_t bytes) {
    const double m = (double) bytes / (1 << 20);
    char buf[32];
    std::snprintf(buf, sizeof buf, m < 10 ? "%.1f MiB" : "%.0f MiB", m);
    return buf;
}

} // namespace

MemoryPlan Trainer::plan(int64_t batch, int64_t len, const StepSettings & s, std::optional<CensusKernels> census) {
    const ModelWeights & w = *model_->weights;
    if (batch < 1 || len < 2) throw Error("plan: need at least 1 sequence of at least 2 tokens");
    if (len > w.config().n_ctx_train) {
        throw Error("plan: " + std::to_string(len) + " tokens exceed the model's context length " + std::to_string(w.config().n_ctx_train));
    }
    std::vector<TrainSeq> seqs((size_t) batch);
    for (TrainSeq & q : seqs) {
        q.tokens.assign((size_t) len, 0);
        q.weights.assign((size_t) len, 1.0f);
    }
    StepSettings st = s;
    const LossSpec loss{false, s.beta > 0, s.clip_eps};
    int64_t n = 0, tokens = 0;
    const std::vector<MicroBatch> mbs = fit(seqs, st, loss, n, tokens);
    const CensusKernels own = device_kernels(), counted = census.value_or(own);
    Census ops(counted);
    const GraphOptions g = graph_options(st.graph);
    const auto [device, cpu] = planned_bytes(mbs, loss, g, &ops);
    // The estimate prices the device's own kernels: this census where it counted those.
    const double estimate = counted == own ? priced_ms(ops) : estimated_ms(mbs, st, loss);
    return MemoryPlan{device, cpu, st.micro_batch_tokens, st.graph.kept_layers, (int64_t) mbs.size(), g.merge_adapter > 0, g.fuse_adapter,
                      census ? ops.list() : std::vector<OpCensus>{}, census ? ops.custom_runs() : 0, estimate};
}

std::pair<size_t, size_t> Trainer::planned_bytes(const std::vector<MicroBatch> & mbs, const LossSpec & loss, const GraphOptions & g,
                                                 Census * census) {
    const ModelWeights & w = *model_->weights;
    // Planning leaves a scheduler's allocator believing in buffers it freed, and would free the
    // step's live ones: it gets a scheduler of its own.
    std::unique_ptr<ggml_backend_sched, void (*)(ggml_backend_sched_t)> sched(new_sched(graph_nodes(mbs, g)), ggml_backend_sched_free);
    const bool gpu = model_->backends->is_gpu();
    std::pair<size_t, size_t> out{0, 0};
    for (const MicroBatch & orig : mbs) {
        const MicroBatch * mb = &orig;
        MicroBatch with_ref;
        if (loss.kl && orig.ref_lp.size() != orig.rows.size()) {
            // an input's values, not its size: the base-model pass is not run
            with_ref = orig;
            with_ref.ref_lp.assign(orig.rows.size(), 0.0f);
            mb = &with_ref;
        }
        // The attention backend (if any) shares the primary's buffer: the CPU's is the last.
        const std::vector<size_t> b = training_pass_bytes(w, *adapter_, grad_buffers(), sched.get(), ggml_backend_sched_get_n_backends(sched.get()), *mb, loss, g, census);
        out.first = std::max(out.first, b[0]);
        if (gpu) out.second = std::max(out.second, b.back());
    }
    return out;
}

int64_t Trainer::most_kept(const std::vector<MicroBatch> & mbs, const StepSettings & s, const LossSpec & loss, int64_t guess) {
    // Beyond one, more kept layers plan more (one can plan less than none: its backward shares
    // room with the LM head's), and none is known to fit. Each try plans the whole graph, so the
    // search starts at a guess (the last step's answer, which a batch of similar size usually
    // keeps).
    const int64_t n_layer = model_->weights->config().n_layer;
    StepSettings t = s;
    const auto fits = [&](int64_t k) {
        t.graph.kept_layers = k;
        return planned_bytes(mbs, loss, graph_options(t.graph)).first <= s.memory_budget;
    };
    int64_t lo = 0, hi = n_layer;
    guess = std::clamp<int64_t>(guess, 1, n_layer);
    if (fits(guess)) {
        lo = guess;
    } else {
        hi = guess - 1;
        lo = fits(1) ? 1 : 0;
        if (lo == 0) hi = 0;
    }
    if (lo < hi && !fits(lo + 1)) hi = lo;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (fits(mid)) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

CensusKernels Trainer::device_kernels() const { return model_->backends->is_gpu() ? CensusKernels::cuda : CensusKernels::graph; }

double Trainer::estimated_ms(const std::vector<MicroBatch> & mbs, const StepSettings & s, const LossSpec & loss) {
    Census census(device_kernels());
    planned_bytes(mbs, loss, graph_options(s.graph), &census);
    return priced_ms(census);
}

double Trainer::priced_ms(const Census & census) const {
    const bool gpu = model_->backends->is_gpu();
    double flops = 0, bytes = 0, ops = 0;
    for (const OpCensus & o : census.list()) {
        flops += o.flops;
        bytes += o.bytes;
        ops += (double) o.count;
    }
    if (!gpu) {
        // This project's 2-core machine, from one split and four kept layers of the Qwen2.5-1.5B
        // shape cut to 4 layers (4 x 256 tokens): 150 GFLOP/s and 6 GB/s.
        return flops / 1.5e8 + bytes / 6.0e6;
    }
    // Least squares over 12 timed steps of an H200 (Qwen2.5-1.5B shape, 16 x 512, 2026-11-27: the
    // default, our nodes, 16 GiB plans in one and two micro-batches, waits on the host and on the
    // device; 246 to 457 ms a step, within 4.3 ms rms): 2.7 TB/s, 620 TFLOP/s, 16 us an op, and
    // 180 us each run of our nodes that the scheduler waits for on the host (the GPU idles while
    // the host queues the next piece). Bytes and FLOPs alone (its rates before) ranked one micro-
    // batch below two, where the GPU took 260 against 328 ms (246 against 268 waiting on the device).
    const double runs = node_device_waits_ ? 0.0 : (double) census.custom_runs();
    return flops / 6.2e11 + bytes / 2.7e9 + 0.016 * ops + 0.18 * runs;
}

std::vector<MicroBatch> Trainer::fit(const std::vector<TrainSeq> & batch, StepSettings & s, const LossSpec & loss, int64_t & n, int64_t & tokens) {
    const ModelConfig & c = model_->weights->config();
    auto prepared = [&](const StepSettings & t) {
        PackedBatch p = pack_micro_batches(batch, t);
        n = p.n;
        tokens = p.tokens;
        return std::move(p.mbs);
    };
    if (s.auto_kept_layers) s.graph.kept_layers = 0;
    std::vector<MicroBatch> mbs = prepared(s);
    if (s.memory_budget == 0 || mbs.empty()) return mbs;
    const size_t budget = s.memory_budget;
    auto bytes = [&](const std::vector<MicroBatch> & m, const StepSettings & t) { return planned_bytes(m, loss, graph_options(t.graph)).first; };

    if (bytes(mbs, s) > budget) {
        // Fewer tokens per micro-batch, down to one sequence each (the longest sets the floor).
        int64_t longest = 0, widest = 0;
        for (const MicroBatch & mb : mbs) {
            longest = std::max(longest, mb.L);
            widest = std::max(widest, mb.L * mb.B);
        }
        StepSettings t = s;
        t.micro_batch_tokens = longest;
        std::vector<MicroBatch> lo_mbs = prepared(t);
        const size_t floor = bytes(lo_mbs, t);
        if (floor > budget) {
            throw Error("step: the training pass over one sequence of " + std::to_string(longest) + " tokens plans " + mib_text(floor) +
                        " of compute buffer, over the memory budget of " + mib_text(budget) + " (memoryBudget): give it more memory or use shorter sequences");
        }
        // Whole sequences of the longest length per micro-batch: k of them fit at k = 1 and not at
        // all of them; each try plans the whole graph, so the search is over k, not tokens.
        int64_t lo = 1, hi = (widest + longest - 1) / longest - 1;
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo + 1) / 2;
            t.micro_batch_tokens = mid * longest;
            if (bytes(prepared(t), t) <= budget) lo = mid;
            else hi = mid - 1;
        }
        s.micro_batch_tokens = lo * longest;
        mbs = prepared(s);
    }
    if (s.auto_kept_layers && s.graph.recompute) {
        int64_t seqs = 0, longest = 0, per = 0;
        for (const MicroBatch & mb : mbs) {
            seqs += mb.B;
            longest = std::max(longest, mb.L);
            per = std::max(per, mb.B);
        }
        const GraphOptions & go = s.graph;
        const int64_t what = (int64_t) go.kept_f16 | (int64_t) (go.merge_adapter + 1) << 1 | (int64_t) (go.fuse_adapter + 1) << 3 | (int64_t) loss.kl << 6 |
                             (int64_t) go.kept_norms << 7 | go.chunk_rows << 8;
        const SplitMemo key{seqs, longest, tokens, s.micro_batch_tokens, budget, what, 0};
        const auto same_shape = [&](const SplitMemo & m) {
            return m.seqs == key.seqs && m.longest == key.longest && m.tokens == key.tokens && m.budget_tokens == key.budget_tokens &&
                   m.budget == key.budget && m.what == key.what;
        };
        if (s.split_for_kept && same_shape(split_memo_) && split_memo_.micro_batch_tokens != s.micro_batch_tokens) {
            s.micro_batch_tokens = split_memo_.micro_batch_tokens;
            mbs = prepared(s);
        }
        s.graph.kept_layers = most_kept(mbs, s, loss, last_auto_kept_);
        if (s.split_for_kept && !same_shape(split_memo_) && s.graph.kept_layers < c.n_layer) {
            // Each further micro-batch reads the weights (and merges the adapter) once more, and
            // each kept layer spares its recomputation: the census weighs the two. Splits are
            // tried in order until one keeps every layer (more would only add passes) or two in
            // a row plan more work than the best.
            double best = estimated_ms(mbs, s, loss);
            int worse = 0;
            for (int64_t m = (int64_t) mbs.size() + 1; per > 1 && worse < 2; ++m) {
                const int64_t k = (seqs + m - 1) / m; // sequences per micro-batch
                if (k >= per) continue;
                per = k;
                StepSettings t = s;
                t.micro_batch_tokens = k * longest;
                std::vector<MicroBatch> cand = prepared(t);
                t.graph.kept_layers = most_kept(cand, t, loss, c.n_layer);
                const double est = estimated_ms(cand, t, loss);
                if (est < best) {
                    best = est;
                    s = t;
                    mbs = std::move(cand);
                    worse = 0;
                } else {
                    worse += 1;
                }
                if (t.graph.kept_layers == c.n_layer) break;
            }
        }
        if (s.split_for_kept) {
            split_memo_ = key;
            split_memo_.micro_batch_tokens = s.micro_batch_tokens;
        }
        last_auto_kept_ = s.graph.kept_layers;
    }
    return mbs;
}

} // namespace rrr

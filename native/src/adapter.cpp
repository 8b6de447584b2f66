#include "adapter.h"
#include "flat_buffer.h"
#include "errors.h"
#include "rng.h"

#include <cmath>
#include <cstring>

namespace rrr {


LoraTarget parse_lora_target(const std::string & name, const std::string & what) {
    for (size_t i = 0; i < kLoraTargets; ++i) {
        if (name == lora_target_name((LoraTarget) i)) return (LoraTarget) i;
    }
    throw Error(what + ": unknown LoRA target '" + name + "' (expected q, k, v, o, gate, up, down)");
}

ggml_tensor * Adapter::base_weight(const ModelWeights & w, int64_t il, LoraTarget t) {
    const LayerWeights & l = w.layers[il];
    switch (t) {
        case LoraTarget::Q: return l.wq;
        case LoraTarget::K: return l.wk;
        case LoraTarget::V: return l.wv;
        case LoraTarget::O: return l.wo;
        case LoraTarget::Gate: return l.w_gate;
        case LoraTarget::Up: return l.w_up;
        case LoraTarget::Down: return l.w_down;
        default: return nullptr;
    }
}

Adapter::Adapter(const ModelWeights & w, const AdapterSpec & spec, ggml_backend_t backend) : spec_(spec), arch_(w.config().arch_name) {
    if (spec.rank < 1) throw Error("LoRA rank: must be >= 1 (got " + std::to_string(spec.rank) + ")");
    if (!(spec.alpha > 0) || !std::isfinite(spec.alpha)) throw Error("LoRA alpha: must be > 0");
    bool any = false;
    for (bool b : spec.targets) any = any || b;
    if (!any) throw Error("LoRA targets: at least one target projection is required");

    const int64_t n_layer = w.config().n_layer;
    size_t n_tensors = 0;
    for (bool b : spec.targets) n_tensors += b ? 2 * (size_t) n_layer : 0;
    ggml_init_params ip{ggml_tensor_overhead() * (n_tensors + 2), nullptr, true}; // and the whole of them
    ctx_ = ggml_init(ip);
    if (!ctx_) throw Error("out of host memory creating the adapter");

    layers_.resize(n_layer);
    for (int64_t il = 0; il < n_layer; ++il) {
        for (size_t ti = 0; ti < kLoraTargets; ++ti) {
            if (!spec.targets[ti]) continue;
            const LoraTarget t = (LoraTarget) ti;
            ggml_tensor * base = base_weight(w, il, t);
            const int64_t n_in = base->ne[0], n_out = base->ne[1];
            if (spec.rank > std::min(n_in, n_out)) {
                throw Error("--rank: rank " + std::to_string(spec.rank) + " exceeds the size of " + ggml_get_name(base) + " [" +
                            std::to_string(n_in) + ", " + std::to_string(n_out) + "]");
            }
            LoraPair & p = layers_[il][t];
            const std::string stem = "blk." + std::to_string(il) + "." + lora_target_tensor(t) + ".weight";
            p.a = ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, n_in, spec.rank);
            p.b = ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, spec.rank, n_out);
            ggml_set_name(p.a, (stem + ".lora_a").c_str());
            ggml_set_name(p.b, (stem + ".lora_b").c_str());
        }
        // A layer's A tensors side by side in target order, then its B tensors: the projections
        // that read one x (q, k, v; gate, up) then have their A stacked in memory already, a view
        // where a graph would concatenate them (stacked_a in train_graph.cpp).
        for (bool b_side : {false, true}) {
            for (const LoraPair & p : layers_[il].pairs) {
                if (p.active()) params_.push_back(b_side ? p.b : p.a);
            }
        }
    }
    // One buffer laid out as the optimizer's gradients and moments are: its update is one op.
    try {
        const FlatBuffer f = place_flat(ctx_, params_, backend, "the LoRA adapter");
        buf_ = f.buffer;
        whole_ = f.whole;
    } catch (...) {
        ggml_free(ctx_);
        throw;
    }

    SplitMix64 rng(spec.seed);
    std::vector<float> tmp;
    // A drawn layer by layer, target by target (the order before params_ put a layer's A side by side).
    for (const LoraLayer & layer : layers_) {
        for (const LoraPair & p : layer.pairs) {
            if (!p.active()) continue;
            const double bound = 1.0 / std::sqrt((double) p.a->ne[0]);
            tmp.resize((size_t) ggml_nelements(p.a));
            for (float & x : tmp) x = (float) ((2.0 * rng.uniform() - 1.0) * bound);
            ggml_backend_tensor_set(p.a, tmp.data(), 0, ggml_nbytes(p.a));
        }
    }
}

Adapter::~Adapter() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

ggml_tensor * Adapter::find(const std::string & name) const {
    for (ggml_tensor * t : params_) {
        if (name == ggml_get_name(t)) return t;
    }
    return nullptr;
}

size_t Adapter::n_elements() const {
    size_t n = 0;
    for (ggml_tensor * t : params_) n += (size_t) ggml_nelements(t);
    return n;
}

} // namespace rrr

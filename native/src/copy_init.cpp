#include "copy_init.h"
#include "errors.h"

#include <cmath>

#include "ggml.h"

namespace rrr {

void check_copy_init(const CopyInit & c, const std::string & arch, int64_t n_head_kv) {
    if (arch == "qwen3") throw Error("--init copy: qwen3's q/k norms would undo the attention pattern (use llama or qwen2)");
    if (n_head_kv != c.n_head) throw Error("--init copy: needs --kv-heads equal to --heads (each head copies its own slice)");
    if (c.n_head * c.head_dim != c.n_embd) throw Error("--init copy: needs heads x head dim == embd");
    if (c.offset < 1) throw Error("--copy-offset must be >= 1");
}

namespace {

// Per-head query and key whose RoPE-rotated dot product is largest at distance `offset`:
// for each rotary pair p, q.k = a^2 cos(w_p (d - offset)) with d the query-key distance.
void rotary_targets(const CopyInit & c, std::vector<float> & q, std::vector<float> & k) {
    const int64_t hd = c.head_dim, half = hd / 2;
    q.assign(hd, 0.0f);
    k.assign(hd, 0.0f);
    const float a = std::sqrt(c.sharpness * std::sqrt((float) hd));
    for (int64_t p = 0; p < half; ++p) {
        const float w = std::pow(c.rope_base, -2.0f * (float) p / (float) hd);
        const int64_t i0 = c.rope_mode == GGML_ROPE_TYPE_NEOX ? p : 2 * p;
        const int64_t i1 = c.rope_mode == GGML_ROPE_TYPE_NEOX ? p + half : 2 * p + 1;
        q[i0] = a * std::cos(w * (float) c.offset);
        q[i1] = -a * std::sin(w * (float) c.offset);
        k[i0] = a;
        k[i1] = 0.0f;
    }
}

bool starts_with(const std::string & s, const char * p) { return s.rfind(p, 0) == 0; }

} // namespace

void apply_copy_init(const CopyInit & c, const std::string & name, const std::vector<int64_t> & ne, std::vector<float> & v) {
    const int64_t n = c.n_embd;
    // Every embedding has the same norm, so after RMS norm the bias channel is one constant.
    const float rms = std::sqrt((c.bias_channel * c.bias_channel + (float) (n - 1)) / (float) n);
    const float h0 = c.bias_channel / rms;
    const bool layer0 = starts_with(name, "blk.0.");
    auto fill = [&](float x) { std::fill(v.begin(), v.end(), x); };

    if (name == "token_embd.weight") {
        for (int64_t r = 0; r < ne[1]; ++r) {
            float * row = &v[r * n];
            double ss = 0;
            for (int64_t i = 1; i < n; ++i) ss += (double) row[i] * row[i];
            const float scale = (float) std::sqrt((double) (n - 1) / (ss > 0 ? ss : 1.0));
            for (int64_t i = 1; i < n; ++i) row[i] *= scale;
            row[0] = c.bias_channel;
        }
    } else if (name.find("_norm.weight") != std::string::npos && name != "output_norm.weight") {
        fill(1.0f);
    } else if (name.find(".bias") != std::string::npos || starts_with(name, "blk.") && name.find("ffn_down") != std::string::npos) {
        fill(0.0f);  // the MLPs add nothing
    } else if (name.find("attn_output") != std::string::npos) {
        fill(0.0f);
        if (layer0) for (int64_t i = 0; i < n; ++i) v[i * n + i] = c.strength;
    } else if (layer0 && (name.find("attn_q.") != std::string::npos || name.find("attn_k.") != std::string::npos)) {
        std::vector<float> q, k;
        rotary_targets(c, q, k);
        const std::vector<float> & t = name.find("attn_q.") != std::string::npos ? q : k;
        fill(0.0f);
        for (int64_t h = 0; h < c.n_head; ++h) {
            for (int64_t d = 0; d < c.head_dim; ++d) v[(h * c.head_dim + d) * n + 0] = t[d] / h0;
        }
    } else if (layer0 && name.find("attn_v.") != std::string::npos) {
        fill(0.0f);
        for (int64_t i = 0; i < n; ++i) v[i * n + i] = 1.0f;
    }
}

} // namespace rrr

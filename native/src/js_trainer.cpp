#include "js_trainer.h"
#include "addon_state.h"
#include "js_async.h"
#include "js_handle.h"
#include "js_convert.h"
#include "js_model.h"
#include "lora_gguf.h"
#include "merge.h"
#include "train_step.h"

#include <cmath>
#include <cstring>
#include <map>

namespace rrr {

namespace {

std::vector<TrainSeq> batch_from_js(const Napi::Value & v) {
    Napi::Env env = v.Env();
    if (!v.IsArray()) throw Napi::TypeError::New(env, "step: batch must be an array of { tokens, weights, mask?, oldLogprobs? }");
    Napi::Array arr = v.As<Napi::Array>();
    std::vector<TrainSeq> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        const std::string at = "step: sequence " + std::to_string(i);
        Napi::Value e = arr.Get(i);
        if (!e.IsObject()) throw Napi::TypeError::New(env, at + " is not an object");
        Napi::Object o = e.As<Napi::Object>();
        auto typed = [&](const char * key, napi_typedarray_type type, const char * type_name, bool required) -> Napi::TypedArray {
            Napi::Value f = o.Get(key);
            if (f.IsUndefined() || f.IsNull()) {
                if (required) throw Napi::TypeError::New(env, at + ": " + key + " is required");
                return Napi::TypedArray();
            }
            if (!f.IsTypedArray() || f.As<Napi::TypedArray>().TypedArrayType() != type) {
                throw Napi::TypeError::New(env, at + ": " + key + " must be a " + type_name);
            }
            return f.As<Napi::TypedArray>();
        };
        Napi::TypedArray t = typed("tokens", napi_int32_array, "Int32Array", true);
        Napi::TypedArray w = typed("weights", napi_float32_array, "Float32Array", true);
        Napi::TypedArray m = typed("mask", napi_uint8_array, "Uint8Array", false);
        Napi::TypedArray old = typed("oldLogprobs", napi_float32_array, "Float32Array", false);
        const int32_t * tp = t.As<Napi::Int32Array>().Data();
        out[i].tokens.assign(tp, tp + t.ElementLength());
        const float * wp = w.As<Napi::Float32Array>().Data();
        out[i].weights.assign(wp, wp + w.ElementLength());
        if (!m.IsEmpty()) {
            const uint8_t * mp = m.As<Napi::Uint8Array>().Data();
            out[i].mask.assign(mp, mp + m.ElementLength());
        }
        if (!old.IsEmpty()) {
            const float * op = old.As<Napi::Float32Array>().Data();
            out[i].old_lp.assign(op, op + old.ElementLength());
        }
    }
    return out;
}

StepSettings settings_from_js(const Napi::Value & v) {
    Napi::Env env = v.Env();
    if (!v.IsObject()) throw Napi::TypeError::New(env, "step: options object with lr is required");
    Napi::Object o = v.As<Napi::Object>();
    StepSettings s;
    s.lr = (float) num_opt(o, "lr", 0.0);
    s.clip_eps = (float) num_opt(o, "clipEps", s.clip_eps);
    s.beta = (float) num_opt(o, "beta", 0.0);
    s.micro_batch_tokens = int_opt(o, "microBatchTokens", 0);
    if (s.micro_batch_tokens < 0) throw Napi::RangeError::New(env, "microBatchTokens: must be a whole number >= 0 (0: the whole batch at once)");
    s.graph.recompute = bool_opt(o, "recompute", true);
    const Napi::Value kept = o.Get("keptLayers");
    if (kept.IsString() && kept.ToString().Utf8Value() == "auto") {
        s.auto_kept_layers = true;
    } else {
        s.graph.kept_layers = int_opt(o, "keptLayers", 0);
        if (s.graph.kept_layers < 0) throw Napi::RangeError::New(env, "keptLayers: must be a whole number >= 0 or 'auto'");
    }
    const double budget = num_opt(o, "memoryBudget", 0.0);
    if (!(budget >= 0) || !std::isfinite(budget)) throw Napi::RangeError::New(env, "memoryBudget: must be a number of bytes >= 0");
    s.memory_budget = (size_t) budget;
    if (s.auto_kept_layers && s.memory_budget == 0) throw Napi::RangeError::New(env, "keptLayers: 'auto' needs a memoryBudget");
    s.split_for_kept = bool_opt(o, "keptSplit", true);
    s.graph.chunk_rows = int_opt(o, "logitsChunkRows", 0);
    const Napi::Value merge = o.Get("mergeAdapter");
    if (merge.IsBoolean()) s.graph.merge_adapter = merge.As<Napi::Boolean>().Value() ? 1 : 0;
    else if (!merge.IsUndefined()) throw Napi::TypeError::New(env, "mergeAdapter: expected true, false or undefined (the device's default)");
    const Napi::Value fuse = o.Get("fuseAdapter");
    if (fuse.IsBoolean()) s.graph.fuse_adapter = fuse.As<Napi::Boolean>().Value() ? 1 : 0;
    else if (fuse.IsString() && fuse.ToString().Utf8Value() == "bytes") s.graph.fuse_adapter = 2;
    else if (!fuse.IsUndefined()) throw Napi::TypeError::New(env, "fuseAdapter: expected true, false, 'bytes' or undefined (the device's default)");
    const Napi::Value kept16 = o.Get("keptF16");
    if (kept16.IsBoolean()) s.graph.kept_f16 = kept16.As<Napi::Boolean>().Value();
    else if (!kept16.IsUndefined()) throw Napi::TypeError::New(env, "keptF16: expected true, false or undefined (false)");
    const Napi::Value kept_norms = o.Get("keptNorms");
    if (kept_norms.IsBoolean()) s.graph.kept_norms = kept_norms.As<Napi::Boolean>().Value();
    else if (!kept_norms.IsUndefined()) throw Napi::TypeError::New(env, "keptNorms: expected true, false or undefined (false)");
    s.profile = bool_opt(o, "profile", false);
    return s;
}

Napi::Object stats_to_js(Napi::Env env, const StepStats & st) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", st.loss);
    o.Set("kl", st.kl);
    o.Set("gradNorm", st.grad_norm);
    o.Set("meanRatio", st.mean_ratio);
    o.Set("meanLogprob", st.mean_logprob);
    o.Set("clipFraction", st.clip_fraction);
    o.Set("lossScale", st.loss_scale);
    o.Set("tokens", (double) st.tokens);
    o.Set("lossTokens", (double) st.loss_tokens);
    o.Set("ms", st.ms);
    o.Set("graphMs", st.graph_ms);
    o.Set("skipped", st.skipped);
    o.Set("computeBytes", (double) st.compute_bytes);
    o.Set("microBatches", (double) st.micro_batches);
    o.Set("microBatchTokens", (double) st.micro_batch_tokens);
    o.Set("keptLayers", (double) st.kept_layers);
    o.Set("adapterMerged", st.adapter_merged);
    set_placement(env, o, st.placement);
    o.Set("graphCustomRuns", st.placement.custom_runs);
    if (!st.profile.empty()) {
        Napi::Array prof = Napi::Array::New(env, st.profile.size());
        for (size_t i = 0; i < st.profile.size(); ++i) {
            Napi::Object e = Napi::Object::New(env);
            e.Set("op", st.profile[i].op);
            e.Set("role", st.profile[i].role);
            e.Set("count", (double) st.profile[i].count);
            e.Set("ms", st.profile[i].ms);
            prof.Set((uint32_t) i, e);
        }
        o.Set("profile", prof);
    }
    return o;
}

Napi::Float32Array floats_to_js(Napi::Env env, const std::vector<float> & v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
    return a;
}

std::vector<float> read_tensor(const ggml_tensor * t) {
    std::vector<float> v((size_t) ggml_nelements(t));
    ggml_backend_tensor_get(t, v.data(), 0, v.size() * sizeof(float));
    return v;
}

AdamWConfig opt_from_js(const Napi::Value & v) {
    AdamWConfig c;
    if (!v.IsObject()) return c;
    Napi::Object o = v.As<Napi::Object>();
    c.beta1 = (float) num_opt(o, "beta1", c.beta1);
    c.beta2 = (float) num_opt(o, "beta2", c.beta2);
    c.eps = (float) num_opt(o, "eps", c.eps);
    c.weight_decay = (float) num_opt(o, "weightDecay", c.weight_decay);
    c.grad_clip = (float) num_opt(o, "gradClip", c.grad_clip);
    return c;
}

TrainerSettings trainer_settings_from_js(const Napi::Value & v) {
    TrainerSettings ts;
    if (!v.IsObject()) return ts;
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value t = o.Get("transposedWeights");
    if (!t.IsUndefined()) {
        const std::string mode = t.ToString();
        ts.transposed = guard(v.Env(), [&] { return parse_transposed_mode(mode); });
    }
    const Napi::Value fa = o.Get("flashAttn");
    if (fa.IsBoolean()) ts.flash_attn = fa.As<Napi::Boolean>().Value() ? 1 : 0;
    else if (!fa.IsUndefined()) throw Napi::TypeError::New(v.Env(), "flashAttn: expected true, false or undefined (auto)");
    // Switches that are off unless given: true, false or undefined.
    const auto off_unless = [&](const char * name, bool & field) {
        const Napi::Value x = o.Get(name);
        if (x.IsBoolean()) field = x.As<Napi::Boolean>().Value();
        else if (!x.IsUndefined()) throw Napi::TypeError::New(v.Env(), std::string(name) + ": expected true, false or undefined (off)");
    };
    off_unless("fusedAttnBackward", ts.fused_attn_backward);
    off_unless("fusedAttnF16", ts.fused_attn_f16);
    off_unless("fusedMlpBackward", ts.fused_mlp_backward);
    off_unless("fusedMerge", ts.fused_merge);
    off_unless("fusedLoraBackward", ts.fused_lora_backward);
    off_unless("fusedLora16", ts.fused_lora_16);
    off_unless("mergeBf16", ts.merge_bf16);
    off_unless("fusedHead", ts.fused_head);
    off_unless("fusedNormBackward", ts.fused_norm_backward);
    off_unless("gateUp16", ts.gate_up_16);
    off_unless("swigluGrad16", ts.swiglu_grad_16);
    const Napi::Value nw = o.Get("nodeWaits");
    const std::string waits = nw.IsString() ? nw.ToString().Utf8Value() : "";
    if (waits == "host" || waits == "device") {
        ts.node_waits = waits == "device" ? 1 : 0;
    } else if (!nw.IsUndefined()) {
        throw Napi::TypeError::New(v.Env(), "nodeWaits: expected 'host', 'device' or undefined (host)");
    }
    const Napi::Value hs = o.Get("fusedHeadSteps");
    if (hs.IsBoolean()) ts.fused_head_steps = hs.As<Napi::Boolean>().Value() ? 1 : 0;
    else if (!hs.IsUndefined()) throw Napi::TypeError::New(v.Env(), "fusedHeadSteps: expected true, false or undefined (on a GPU, off on the CPU)");
    const Napi::Value ws = o.Get("attnWorkspaceMiB");
    if (ws.IsNumber() && ws.As<Napi::Number>().DoubleValue() >= 0 && std::isfinite(ws.As<Napi::Number>().DoubleValue())) {
        ts.attn_workspace_bytes = (int64_t) (ws.As<Napi::Number>().DoubleValue() * (1 << 20));
    } else if (!ws.IsUndefined()) {
        throw Napi::TypeError::New(v.Env(), "attnWorkspaceMiB: expected a number >= 0 or undefined (256 on a GPU, 0 on the CPU)");
    }
    return ts;
}

AdapterSpec spec_from_js(const Napi::Value & v) {
    Napi::Env env = v.Env();
    if (!v.IsObject()) throw Napi::TypeError::New(env, "Trainer.create: a LoRA config { rank, alpha, targets } is required");
    Napi::Object o = v.As<Napi::Object>();
    AdapterSpec s;
    s.rank = int_opt(o, "rank", s.rank);
    s.alpha = (float) num_opt(o, "alpha", s.alpha);
    s.seed = (uint64_t) int_opt(o, "seed", (int64_t) s.seed);
    s.dropout = (float) num_opt(o, "dropout", 0.0);
    if (!(s.dropout >= 0.0f && s.dropout < 1.0f)) {
        throw Napi::RangeError::New(env, "LoRA dropout: expected a number in [0, 1), got " + o.Get("dropout").ToString().Utf8Value());
    }
    Napi::Value t = o.Get("targets");
    if (!t.IsArray()) throw Napi::TypeError::New(env, "LoRA targets: expected an array like ['q', 'v']");
    Napi::Array arr = t.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        const std::string name = arr.Get(i).ToString();
        s.targets[(size_t) guard(env, [&] { return parse_lora_target(name, "LoRA targets"); })] = true;
    }
    return s;
}

class NativeTrainer : public Napi::ObjectWrap<NativeTrainer> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeTrainer", {
            StaticMethod("create", &NativeTrainer::create),
            StaticMethod("fromAdapter", &NativeTrainer::from_adapter),
            InstanceMethod("info", &NativeTrainer::info),
            InstanceMethod("step", &NativeTrainer::step),
            InstanceMethod("evaluate", &NativeTrainer::evaluate),
            InstanceMethod("gradients", &NativeTrainer::gradients),
            InstanceMethod("logprobs", &NativeTrainer::logprobs),
            InstanceMethod("plan", &NativeTrainer::plan),
            InstanceMethod("params", &NativeTrainer::params),
            InstanceMethod("setParam", &NativeTrainer::set_param),
            InstanceMethod("saveAdapter", &NativeTrainer::save_adapter_js),
            InstanceMethod("loadAdapter", &NativeTrainer::load_adapter_js),
            InstanceMethod("saveState", &NativeTrainer::save_state_js),
            InstanceMethod("loadState", &NativeTrainer::load_state_js),
            InstanceMethod("dispose", &NativeTrainer::dispose),
        });
    }

    explicit NativeTrainer(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeTrainer>(info) {
        trainer_ = state_from<Trainer>(info, "NativeTrainer is created by NativeTrainer.create(model, lora, optimizer)");
    }

    std::shared_ptr<Trainer> trainer_;

private:
    Trainer & tr(Napi::Env env) {
        if (!trainer_) throw Napi::Error::New(env, "trainer has been disposed");
        return *trainer_;
    }

    static Napi::Value wrap(Napi::Env env, std::shared_ptr<Trainer> t) {
        return construct_with(env, env.GetInstanceData<AddonState>()->trainer_ctor, std::move(t));
    }

    static Napi::Value create(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        std::shared_ptr<ModelCore> model = model_core_of(info[0], "Trainer.create");
        const AdapterSpec spec = spec_from_js(info[1]);
        const AdamWConfig opt = opt_from_js(info[2]);
        const TrainerSettings ts = trainer_settings_from_js(info[3]);
        auto out = std::make_shared<std::shared_ptr<Trainer>>();
        return PromiseJob::start(env,
            [model, spec, opt, ts, out] {
                std::lock_guard<std::mutex> lock(model->mu);
                *out = std::make_shared<Trainer>(model, spec, opt, ts);
            },
            [out](Napi::Env env) { return wrap(env, *out); });
    }

    static Napi::Value from_adapter(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        std::shared_ptr<ModelCore> model = model_core_of(info[0], "Trainer.fromAdapter");
        if (!info[1].IsString()) throw Napi::TypeError::New(env, "--adapter: path must be a string");
        const std::string path = info[1].As<Napi::String>();
        const AdamWConfig opt = opt_from_js(info[2]);
        const TrainerSettings ts = trainer_settings_from_js(info[3]);
        auto out = std::make_shared<std::shared_ptr<Trainer>>();
        return PromiseJob::start(env,
            [model, path, opt, ts, out] {
                std::lock_guard<std::mutex> lock(model->mu);
                const AdapterSpec spec = read_adapter_spec(path, *model->weights);
                auto t = std::make_shared<Trainer>(model, spec, opt, ts);
                load_adapter(t->adapter(), path, *model->weights);
                *out = t;
            },
            [out](Napi::Env env) { return wrap(env, *out); });
    }

    Napi::Value info(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        Trainer & t = tr(env);
        const AdapterSpec & s = t.adapter().spec();
        Napi::Object o = Napi::Object::New(env);
        o.Set("rank", (double) s.rank);
        o.Set("alpha", s.alpha);
        o.Set("dropout", s.dropout);
        Napi::Array targets = Napi::Array::New(env);
        for (size_t i = 0; i < kLoraTargets; ++i) {
            if (s.targets[i]) targets.Set(targets.Length(), lora_target_name((LoraTarget) i));
        }
        o.Set("targets", targets);
        o.Set("nParams", (double) t.adapter().n_elements());
        o.Set("steps", (double) t.optimizer().steps());
        o.Set("transposedWeightsBytes", (double) t.transposed_bytes());
        o.Set("flashAttn", t.flash_attn());
        o.Set("fusedAttnBackward", t.fused_attn_backward());
        o.Set("fusedMlpBackward", t.fused_mlp_backward());
        o.Set("fusedMerge", t.fused_merge());
        o.Set("fusedLoraBackward", t.fused_lora_backward());
        o.Set("fusedLora16", t.fused_lora_16());
        o.Set("mergeBf16", t.merge_bf16());
        o.Set("fusedAttnF16", t.fused_attn_f16());
        o.Set("fusedHead", t.fused_head());
        o.Set("fusedNormBackward", t.fused_norm_backward());
        o.Set("gateUp16", t.gate_up_16());
        o.Set("swigluGrad16", t.swiglu_grad_16());
        o.Set("nodeWaits", t.node_device_waits() ? "device" : "host");
        return o;
    }

    // step/evaluate/gradients share the job shape: run under the model lock, return stats.
    Napi::Value stats_job(const Napi::CallbackInfo & info, int mode) {
        Napi::Env env = info.Env();
        tr(env);
        auto batch = batch_from_js(info[0]);
        const StepSettings s = settings_from_js(info[1]);
        auto t = trainer_;
        auto st = std::make_shared<StepStats>();
        auto grads = std::make_shared<std::vector<std::pair<std::string, std::vector<float>>>>();
        return PromiseJob::start(env,
            [t, batch = std::move(batch), s, mode, st, grads] {
                std::lock_guard<std::mutex> lock(t->model()->mu);
                if (mode == 0) *st = t->step(batch, s);
                else if (mode == 1) *st = t->evaluate(batch, s);
                else {
                    *st = t->gradients(batch, s);
                    const auto & params = t->adapter().params();
                    const auto & g = t->optimizer().grads();
                    for (size_t i = 0; i < params.size(); ++i) {
                        grads->emplace_back(params[i]->name, st->skipped ? std::vector<float>((size_t) ggml_nelements(g[i]), 0.0f) : read_tensor(g[i]));
                    }
                }
            },
            [st, grads, mode](Napi::Env env) -> Napi::Value {
                Napi::Object o = stats_to_js(env, *st);
                if (mode == 2) {
                    Napi::Object g = Napi::Object::New(env);
                    for (const auto & [name, v] : *grads) g.Set(name, floats_to_js(env, v));
                    o.Set("grads", g);
                }
                return o;
            });
    }

    Napi::Value step(const Napi::CallbackInfo & info) { return stats_job(info, 0); }
    Napi::Value evaluate(const Napi::CallbackInfo & info) { return stats_job(info, 1); }
    Napi::Value gradients(const Napi::CallbackInfo & info) { return stats_job(info, 2); }

    Napi::Value logprobs(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        tr(env);
        auto seqs = seqs_from_js(info[0], "logprobs");
        const bool with_adapter = !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
        const int64_t mbt = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
        auto t = trainer_;
        auto out = std::make_shared<std::vector<std::vector<float>>>();
        return PromiseJob::start(env,
            [t, seqs = std::move(seqs), with_adapter, mbt, out] {
                std::lock_guard<std::mutex> lock(t->model()->mu);
                *out = t->logprobs(seqs, with_adapter, mbt);
            },
            [out](Napi::Env env) -> Napi::Value {
                Napi::Array arr = Napi::Array::New(env, out->size());
                for (size_t i = 0; i < out->size(); ++i) arr.Set((uint32_t) i, floats_to_js(env, (*out)[i]));
                return arr;
            });
    }

    Napi::Value plan(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        tr(env);
        if (!info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "plan: expected (batch, len, options)");
        const int64_t batch = info[0].As<Napi::Number>().Int64Value(), len = info[1].As<Napi::Number>().Int64Value();
        const Napi::Object opts = info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
        const StepSettings s = settings_from_js(opts);
        std::optional<CensusKernels> census;
        if (bool_opt(opts, "census", false)) {
            // the device's own kernels unless asked for another's
            const Napi::Value asked = opts.Get("censusKernels");
            const std::string k = !asked.IsUndefined() ? asked.ToString().Utf8Value() : tr(env).model()->backends->is_gpu() ? "cuda" : "graph";
            if (k != "graph" && k != "cuda") throw Napi::TypeError::New(env, "plan: censusKernels must be 'graph' or 'cuda' (got " + k + ")");
            census = k == "cuda" ? CensusKernels::cuda : CensusKernels::graph;
        }
        const std::string kernels = census == CensusKernels::cuda ? "cuda" : "graph";
        auto t = trainer_;
        auto out = std::make_shared<MemoryPlan>();
        return PromiseJob::start(env,
            [t, batch, len, s, census, out] {
                std::lock_guard<std::mutex> lock(t->model()->mu);
                *out = t->plan(batch, len, s, census);
            },
            [out, kernels](Napi::Env env) -> Napi::Value {
                Napi::Object o = Napi::Object::New(env);
                o.Set("deviceBytes", (double) out->device);
                o.Set("cpuBytes", (double) out->cpu);
                o.Set("microBatchTokens", (double) out->micro_batch_tokens);
                o.Set("keptLayers", (double) out->kept_layers);
                o.Set("microBatches", (double) out->micro_batches);
                o.Set("adapterMerged", out->adapter_merged);
                o.Set("estimatedMs", out->estimated_ms);
                if (out->fuse_adapter == 2) o.Set("fuseAdapter", "bytes");
                else o.Set("fuseAdapter", out->fuse_adapter == 1);
                if (!out->census.empty()) {
                    o.Set("censusCustomRuns", (double) out->census_custom_runs);
                    Napi::Array arr = Napi::Array::New(env, out->census.size());
                    for (size_t i = 0; i < out->census.size(); ++i) {
                        const OpCensus & c = out->census[i];
                        Napi::Object e = Napi::Object::New(env);
                        e.Set("op", c.op);
                        e.Set("role", c.role);
                        e.Set("count", (double) c.count);
                        e.Set("bytes", c.bytes);
                        e.Set("flops", c.flops);
                        arr.Set((uint32_t) i, e);
                    }
                    o.Set("census", arr);
                    o.Set("censusKernels", kernels);
                }
                return o;
            });
    }

    // Debug access for gradient checks; synchronous, takes the model lock briefly.
    Napi::Value params(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        Trainer & t = tr(env);
        std::lock_guard<std::mutex> lock(t.model()->mu);
        Napi::Object o = Napi::Object::New(env);
        for (const ggml_tensor * p : t.adapter().params()) o.Set(p->name, floats_to_js(env, read_tensor(p)));
        return o;
    }

    Napi::Value set_param(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        Trainer & t = tr(env);
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "setParam: name must be a string");
        if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
            throw Napi::TypeError::New(env, "setParam: values must be a Float32Array");
        }
        const std::string name = info[0].As<Napi::String>();
        Napi::Float32Array v = info[1].As<Napi::Float32Array>();
        std::lock_guard<std::mutex> lock(t.model()->mu);
        ggml_tensor * p = t.adapter().find(name);
        if (!p) throw Napi::Error::New(env, "setParam: no adapter tensor named '" + name + "'");
        if ((int64_t) v.ElementLength() != ggml_nelements(p)) {
            throw Napi::Error::New(env, "setParam: " + name + " has " + std::to_string(ggml_nelements(p)) + " values, got " + std::to_string(v.ElementLength()));
        }
        ggml_backend_tensor_set(p, v.Data(), 0, ggml_nbytes(p));
        return env.Undefined();
    }

    using FileOp = void (*)(Trainer &, const std::string &);
    Napi::Value file_job(const Napi::CallbackInfo & info, const char * what, FileOp op) {
        Napi::Env env = info.Env();
        tr(env);
        if (!info[0].IsString()) throw Napi::TypeError::New(env, std::string(what) + ": path must be a string");
        const std::string path = info[0].As<Napi::String>();
        auto t = trainer_;
        return PromiseJob::start(env,
            [t, path, op] {
                std::lock_guard<std::mutex> lock(t->model()->mu);
                op(*t, path);
            },
            [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    }

    Napi::Value save_adapter_js(const Napi::CallbackInfo & info) {
        return file_job(info, "saveAdapter", [](Trainer & t, const std::string & p) { save_adapter(t.adapter(), p); });
    }
    Napi::Value load_adapter_js(const Napi::CallbackInfo & info) {
        return file_job(info, "loadAdapter", [](Trainer & t, const std::string & p) { load_adapter(t.adapter(), p, *t.model()->weights); });
    }
    Napi::Value save_state_js(const Napi::CallbackInfo & info) {
        return file_job(info, "saveState", [](Trainer & t, const std::string & p) { save_train_state(t.adapter(), t.optimizer(), p); });
    }
    Napi::Value load_state_js(const Napi::CallbackInfo & info) {
        return file_job(info, "loadState", [](Trainer & t, const std::string & p) { load_train_state(t.adapter(), t.optimizer(), p); });
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        trainer_.reset();
        return info.Env().Undefined();
    }
};

} // namespace

Napi::Function define_native_trainer(Napi::Env env) { return NativeTrainer::define(env); }

std::shared_ptr<Trainer> unwrap_trainer(const Napi::Value & v, const char * what) {
    Napi::Env env = v.Env();
    const Napi::FunctionReference & ctor = env.GetInstanceData<AddonState>()->trainer_ctor;
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor.Value())) {
        throw Napi::TypeError::New(env, std::string(what) + ": expected a Trainer (adapter)");
    }
    NativeTrainer * t = NativeTrainer::Unwrap(v.As<Napi::Object>());
    if (!t->trainer_) throw Napi::Error::New(env, std::string(what) + ": the trainer has been disposed");
    return t->trainer_;
}

Napi::Value merge_adapter_js(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "mergeAdapter: expected { model, adapter, out }");
    Napi::Object o = info[0].As<Napi::Object>();
    const std::string model = str_opt(o, "model", ""), adapter = str_opt(o, "adapter", ""), out = str_opt(o, "out", "");
    if (model.empty()) throw Napi::TypeError::New(env, "--model: a base model path is required");
    if (adapter.empty()) throw Napi::TypeError::New(env, "--adapter: an adapter path is required");
    const std::string mt = str_opt(o, "mergedType", "base");
    ggml_type merged_type = GGML_TYPE_COUNT;
    if (mt == "f32") merged_type = GGML_TYPE_F32;
    else if (mt == "f16") merged_type = GGML_TYPE_F16;
    else if (mt == "bf16") merged_type = GGML_TYPE_BF16;
    else if (mt != "base") throw Napi::TypeError::New(env, "--merged-type: expected base, f16, bf16 or f32, got '" + mt + "'");
    auto res = std::make_shared<MergeResult>();
    return PromiseJob::start(env, [model, adapter, out, merged_type, res] { *res = merge_adapter(model, adapter, out, merged_type); },
                             [res](Napi::Env env) -> Napi::Value {
                                 Napi::Object r = Napi::Object::New(env);
                                 r.Set("merged", (double) res->merged);
                                 r.Set("storedAsF16", (double) res->requantized_f16);
                                 r.Set("quantized", (double) res->quantized);
                                 if (!res->quantized_type.empty()) r.Set("quantizedType", res->quantized_type);
                                 r.Set("bytes", (double) res->bytes);
                                 return r;
                             });
}

} // namespace rrr

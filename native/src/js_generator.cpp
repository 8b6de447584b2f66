// NativeGenerator: the JS face of the batched sampling engine. One generator owns one KV cache
// and borrows a loaded model (kept alive by a shared_ptr to its core); generate() runs a whole
// batch off the JS thread and reports progress through a thread-safe function.
#include "js_generator.h"
#include <atomic>
#include "addon_state.h"
#include "generate.h"
#include "js_async.h"
#include "js_handle.h"
#include "js_convert.h"
#include "js_trainer.h"
#include "model_core.h"
#include "train_step.h"

namespace rrr {

namespace {

struct GenCore {
    std::shared_ptr<ModelCore> model;
    std::unique_ptr<Generator> gen;
    // The adapter setAdapter chose (JS thread only): each generate call samples with the one
    // chosen when it was called, so setAdapter never waits for a call in flight.
    std::shared_ptr<Trainer> chosen;
    // The adapter `gen` holds views of, kept alive by this (under the model's lock).
    std::shared_ptr<Trainer> applied;
    // The generate call (its ticket, counted by the caller from 1) that stop() asked to end.
    // A ticket rather than a flag: a stop that lands before its call's job starts, or after it
    // ended, can then neither be lost nor end the next call.
    std::atomic<int64_t> stop_ticket{0};
};

ggml_type parse_kv_type(const std::string & s) {
    if (s == "f16") return GGML_TYPE_F16;
    if (s == "f32") return GGML_TYPE_F32;
    if (s == "bf16") return GGML_TYPE_BF16;
    throw Error("kvType: unknown cache type '" + s + "' (expected f16, f32 or bf16)");
}

std::vector<GenGroup> groups_from_js(const Napi::Value & v) {
    Napi::Env env = v.Env();
    if (!v.IsArray()) throw Napi::TypeError::New(env, "generate: expected an array of groups");
    Napi::Array arr = v.As<Napi::Array>();
    std::vector<GenGroup> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value e = arr.Get(i);
        if (!e.IsObject()) throw Napi::TypeError::New(env, "generate: group " + std::to_string(i) + " is not an object");
        Napi::Object o = e.As<Napi::Object>();
        Napi::Value p = o.Get("prompt");
        if (!p.IsTypedArray() || p.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            throw Napi::TypeError::New(env, "generate: group " + std::to_string(i) + " prompt is not an Int32Array");
        }
        Napi::Int32Array a = p.As<Napi::Int32Array>();
        out[i].prompt.assign(a.Data(), a.Data() + a.ElementLength());
        out[i].n = (int) int_opt(o, "n", 1);
        Napi::Value sv = o.Get("suffixes");
        if (!sv.IsUndefined() && !sv.IsNull()) {
            if (!sv.IsArray()) throw Napi::TypeError::New(env, "generate: group " + std::to_string(i) + " suffixes is not an array");
            Napi::Array sa = sv.As<Napi::Array>();
            for (uint32_t j = 0; j < sa.Length(); ++j) {
                Napi::Value x = sa.Get(j);
                if (!x.IsTypedArray() || x.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
                    throw Napi::TypeError::New(env, "generate: group " + std::to_string(i) + " suffix " + std::to_string(j) + " is not an Int32Array");
                }
                Napi::Int32Array xa = x.As<Napi::Int32Array>();
                out[i].suffixes.emplace_back(xa.Data(), xa.Data() + xa.ElementLength());
            }
        }
        out[i].request = (uint64_t) int_opt(o, "request", i);
        out[i].first_sample = (uint64_t) int_opt(o, "firstSample", 0);
    }
    return out;
}

GenParams params_from_js(const Napi::Value & v) {
    Napi::Env env = v.Env();
    Napi::Object o = v.IsObject() ? v.As<Napi::Object>() : Napi::Object::New(env);
    GenParams p;
    SamplingParams & s = p.sampling;
    s.temperature = (float) num_opt(o, "temperature", s.temperature);
    s.top_k = (int32_t) int_opt(o, "topK", s.top_k);
    s.top_p = (float) num_opt(o, "topP", s.top_p);
    s.min_p = (float) num_opt(o, "minP", s.min_p);
    s.repeat_penalty = (float) num_opt(o, "repeatPenalty", s.repeat_penalty);
    s.repeat_last_n = (int32_t) int_opt(o, "repeatLastN", s.repeat_last_n);
    s.seed = (uint64_t) int_opt(o, "seed", 0);
    p.max_tokens = (int32_t) int_opt(o, "maxTokens", p.max_tokens);
    p.ignore_eos = bool_opt(o, "ignoreEos", false);
    Napi::Value stop = o.Get("stop");
    if (stop.IsArray()) {
        Napi::Array a = stop.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) p.stop.push_back(a.Get(i).ToString().Utf8Value());
    }
    Napi::Value st = o.Get("stopTokens");
    if (st.IsArray()) {
        Napi::Array a = st.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) p.stop_tokens.push_back(a.Get(i).ToNumber().Int32Value());
    }
    return p;
}

Napi::Object stats_to_js(Napi::Env env, const GenStats & st) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("prefillTokens", (double) st.prefill_tokens);
    o.Set("prefillSteps", (double) st.prefill_steps);
    o.Set("decodeTokens", (double) st.decode_tokens);
    o.Set("generated", (double) st.generated);
    o.Set("steps", (double) st.steps);
    o.Set("prefillMs", st.prefill_ms);
    o.Set("decodeMs", st.decode_ms);
    o.Set("sampleMs", st.sample_ms);
    set_placement(env, o, st.placement);
    return o;
}

class NativeGenerator : public Napi::ObjectWrap<NativeGenerator> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeGenerator", {
            StaticMethod("create", &NativeGenerator::create),
            InstanceMethod("info", &NativeGenerator::info),
            InstanceMethod("generate", &NativeGenerator::generate),
            InstanceMethod("setAdapter", &NativeGenerator::set_adapter),
            InstanceMethod("stop", &NativeGenerator::stop),
            InstanceMethod("dispose", &NativeGenerator::dispose),
        });
    }

    explicit NativeGenerator(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeGenerator>(info) {
        core_ = state_from<GenCore>(info, "NativeGenerator is created by NativeGenerator.create(model, options)");
    }

private:
    std::shared_ptr<GenCore> core_;

    GenCore & core(Napi::Env env) {
        if (!core_) throw Napi::Error::New(env, "generator has been disposed");
        return *core_;
    }

    static Napi::Value create(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto model = model_core_of(info[0], "NativeGenerator.create");
        Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        GeneratorOptions opt;
        opt.max_seqs = (int) int_opt(o, "maxSeqs", opt.max_seqs);
        opt.n_ctx = int_opt(o, "nCtx", opt.n_ctx);
        opt.n_cells = int_opt(o, "nCells", 0);
        opt.n_ubatch = int_opt(o, "nUbatch", opt.n_ubatch);
        opt.kv_type = guard(env, [&] { return parse_kv_type(str_opt(o, "kvType", "f16")); });
        Napi::Value fa = o.Get("flashAttn");
        opt.flash_attn = fa.IsBoolean() ? (fa.As<Napi::Boolean>().Value() ? 1 : 0) : -1;
        opt.kv_streams = guard(env, [&] {
            const std::string layout = str_opt(o, "kvLayout", "auto");
            if (layout == "auto") return -1;
            if (layout == "unified") return 0;
            if (layout == "streams") return 1;
            throw Error("kvLayout: unknown layout '" + layout + "' (expected auto, unified or streams)");
        });
        Napi::Value ds = o.Get("deviceSampling");
        opt.device_sampling = ds.IsBoolean() ? (ds.As<Napi::Boolean>().Value() ? 1 : 0) : -1;
        auto core = std::make_shared<GenCore>();
        core->model = model;
        return PromiseJob::start(env,
            [core, opt] {
                std::lock_guard<std::mutex> lock(core->model->mu);
                ModelCore & m = *core->model;
                try {
                    core->gen = std::make_unique<Generator>(*m.weights, *m.vocab, *m.backends, opt);
                } catch (const std::bad_alloc &) {
                    // Host tables sized by the cells run out before the KV cache's own check can say so.
                    throw Error("out of host memory for a generator of maxSeqs " + std::to_string(opt.max_seqs) + " x nCtx " +
                                std::to_string(opt.n_ctx) + " tokens; lower maxSeqs or nCtx");
                }
            },
            [core](Napi::Env env) -> Napi::Value {
                return construct_with(env, env.GetInstanceData<AddonState>()->generator_ctor, core);
            });
    }

    Napi::Value info(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        const Generator & g = *core(env).gen;
        Napi::Object o = Napi::Object::New(env);
        o.Set("maxSeqs", g.options().max_seqs);
        o.Set("nCtx", (double) g.options().n_ctx);
        o.Set("nCells", (double) g.cache().n_cells());
        o.Set("nUbatch", (double) g.options().n_ubatch);
        o.Set("kvType", ggml_type_name(g.cache().type()));
        o.Set("kvBytes", (double) g.cache().bytes());
        o.Set("kvLayout", g.kv_streams() ? "streams" : "unified");
        o.Set("flashAttn", g.flash_attn());
        o.Set("deviceSampling", g.device_sampling());
        o.Set("device", core(env).model->backends->name());
        return o;
    }

    Napi::Value generate(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        core(env);
        std::vector<GenGroup> groups = groups_from_js(info[0]);
        GenParams params = params_from_js(info[1]);
        // Progress crosses threads through a thread-safe function; it is released when the job
        // ends, whatever the outcome, so the event loop is never held open.
        std::shared_ptr<Napi::ThreadSafeFunction> tsfn;
        if (info[2].IsFunction()) {
            tsfn = std::make_shared<Napi::ThreadSafeFunction>(
                Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "rrr-generate-progress", 0, 1));
        }
        const int64_t ticket = info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
        auto core = core_;
        auto out = std::make_shared<std::vector<std::vector<GenOutput>>>();
        auto stats = std::make_shared<GenStats>();
        return PromiseJob::start(env,
            [core, adapter = core->chosen, groups = std::move(groups), params = std::move(params), tsfn, out, stats, ticket] {
                struct Release {
                    std::shared_ptr<Napi::ThreadSafeFunction> f;
                    ~Release() { if (f) f->Release(); }
                } release{tsfn};
                std::function<void(int64_t)> progress;
                if (tsfn) {
                    progress = [tsfn](int64_t n) {
                        tsfn->NonBlockingCall([n](Napi::Env env, Napi::Function cb) { cb.Call({Napi::Number::New(env, (double) n)}); });
                    };
                }
                std::lock_guard<std::mutex> lock(core->model->mu);
                if (core->applied != adapter) {
                    core->gen->set_lora(adapter ? adapter->adapter().view() : LoraView{});
                    core->applied = adapter;
                }
                std::function<bool()> stop;
                if (ticket > 0) stop = [core, ticket] { return core->stop_ticket.load() == ticket; };
                *out = core->gen->run(groups, params, progress, *stats, stop);
            },
            [out, stats](Napi::Env env) -> Napi::Value {
                Napi::Array groups = Napi::Array::New(env, out->size());
                for (size_t g = 0; g < out->size(); ++g) {
                    const auto & samples = (*out)[g];
                    Napi::Array arr = Napi::Array::New(env, samples.size());
                    for (size_t j = 0; j < samples.size(); ++j) {
                        const GenOutput & c = samples[j];
                        Napi::Object o = Napi::Object::New(env);
                        Napi::Int32Array t = Napi::Int32Array::New(env, c.tokens.size());
                        std::copy(c.tokens.begin(), c.tokens.end(), t.Data());
                        Napi::Float32Array lp = Napi::Float32Array::New(env, c.logprobs.size());
                        std::copy(c.logprobs.begin(), c.logprobs.end(), lp.Data());
                        o.Set("tokens", t);
                        o.Set("logprobs", lp);
                        o.Set("text", Napi::String::New(env, c.text));
                        o.Set("finishReason", c.finish);
                        arr.Set((uint32_t) j, o);
                    }
                    groups.Set((uint32_t) g, arr);
                }
                Napi::Object r = Napi::Object::New(env);
                r.Set("completions", groups);
                r.Set("stats", stats_to_js(env, *stats));
                return r;
            });
    }

    // Samples from base + adapter (a NativeTrainer over the same model), or the base model with
    // null, from the next generate call on; the calls before it keep the adapter they were given.
    Napi::Value set_adapter(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        GenCore & c = core(env);
        std::shared_ptr<Trainer> t;
        if (!info[0].IsNull() && !info[0].IsUndefined()) {
            t = unwrap_trainer(info[0], "setAdapter");
            if (t->model() != c.model) throw Napi::Error::New(env, "setAdapter: the adapter was created for another model");
        }
        c.chosen = std::move(t);
        return env.Undefined();
    }

    // Asks the generate call holding `ticket` to end after its current step (it rejects).
    Napi::Value stop(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "stop: expected a ticket number");
        core(env).stop_ticket.store(info[0].As<Napi::Number>().Int64Value());
        return env.Undefined();
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        core_.reset();
        return info.Env().Undefined();
    }
};

} // namespace

Napi::Function define_native_generator(Napi::Env env) { return NativeGenerator::define(env); }

} // namespace rrr

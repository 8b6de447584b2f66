#include "js_model.h"
#include "addon_state.h"
#include "backend.h"
#include "js_async.h"
#include "js_handle.h"
#include "js_convert.h"
#include "js_trainer.h"
#include "model_core.h"
#include "parallel.h"
#include "reference.h"
#include "train_step.h"
#include "vocab.h"
#include "weights.h"

#include <memory>
#include <mutex>

namespace rrr {

namespace {

class NativeModel : public Napi::ObjectWrap<NativeModel> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeModel", {
            StaticMethod("load", &NativeModel::load),
            InstanceMethod("info", &NativeModel::info),
            InstanceMethod("tokenize", &NativeModel::tokenize),
            InstanceMethod("detokenize", &NativeModel::detokenize),
            InstanceMethod("tokenCounts", &NativeModel::token_counts),
            InstanceMethod("tokenPiece", &NativeModel::token_piece),
            InstanceMethod("chatTemplate", &NativeModel::chat_template),
            InstanceMethod("applyChatTemplate", &NativeModel::apply_chat_template),
            InstanceMethod("forward", &NativeModel::forward),
            InstanceMethod("dispose", &NativeModel::dispose),
        });
    }

    explicit NativeModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeModel>(info) {
        core_ = state_from<ModelCore>(info, "NativeModel is created by NativeModel.load(path, options)");
    }

    const std::shared_ptr<ModelCore> & core_ptr() const { return core_; }

private:
    std::shared_ptr<ModelCore> core_;

    ModelCore & core(Napi::Env env) {
        if (!core_) throw Napi::Error::New(env, "model has been disposed");
        return *core_;
    }

    static Napi::Value load(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "NativeModel.load: path must be a string");
        const std::string path = info[0].As<Napi::String>();
        Napi::Object opts = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        const DevicePref pref = guard(env, [&] { return parse_device(str_opt(opts, "device", "auto")); });
        const int threads = (int) int_opt(opts, "threads", 0);
        auto core = std::make_shared<ModelCore>();
        return PromiseJob::start(env,
            [core, path, pref, threads] {
                core->backends = std::make_unique<Backends>(pref, threads);
                core->weights = std::make_unique<ModelWeights>(path, core->backends->primary());
                core->vocab = std::make_unique<Vocab>(path);
                const int64_t nv = core->weights->config().n_vocab;
                if (core->vocab->n_tokens() != nv) {
                    throw Error(path + ": tokenizer has " + std::to_string(core->vocab->n_tokens()) +
                                " tokens but token_embd.weight has " + std::to_string(nv) + " rows");
                }
            },
            [core](Napi::Env env) -> Napi::Value {
                return construct_with(env, env.GetInstanceData<AddonState>()->model_ctor, core);
            });
    }

    Napi::Value info(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelCore & c = core(env);
        const ModelConfig & m = c.weights->config();
        Napi::Object o = Napi::Object::New(env);
        o.Set("path", c.weights->path());
        o.Set("arch", m.arch_name);
        o.Set("nVocab", (double) m.n_vocab);
        o.Set("nEmbd", (double) m.n_embd);
        o.Set("nLayer", (double) m.n_layer);
        o.Set("nHead", (double) m.n_head);
        o.Set("nHeadKv", (double) m.n_head_kv);
        o.Set("headDim", (double) m.head_dim);
        o.Set("nFf", (double) m.n_ff);
        o.Set("nCtxTrain", (double) m.n_ctx_train);
        o.Set("ropeBase", m.rope_base);
        o.Set("rmsEps", m.rms_eps);
        o.Set("tiedEmbeddings", m.tied_embeddings);
        o.Set("weightType", c.weights->weight_type());
        o.Set("weightBytes", (double) c.weights->bytes());
        o.Set("device", c.backends->name());
        o.Set("gpu", c.backends->is_gpu());
        o.Set("threads", c.backends->n_threads());
        o.Set("bos", c.vocab->bos());
        o.Set("eos", c.vocab->eos());
        std::vector<int32_t> eog = c.vocab->eog_tokens();
        Napi::Int32Array e = Napi::Int32Array::New(env, eog.size());
        for (size_t i = 0; i < eog.size(); ++i) e[i] = eog[i];
        o.Set("eogTokens", e);
        o.Set("chatTemplateSource", c.vocab->chat_template_source());
        return o;
    }

    Napi::Value tokenize(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelCore & c = core(env);
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "tokenize: text must be a string");
        const bool add_special = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
        const bool parse_special = info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
        std::vector<int32_t> t = guard(env, [&] { return c.vocab->tokenize(info[0].As<Napi::String>(), add_special, parse_special); });
        Napi::Int32Array out = Napi::Int32Array::New(env, t.size());
        std::copy(t.begin(), t.end(), out.Data());
        return out;
    }

    // Token counts of many texts, off the JS thread and over the model's threads: libllama's
    // tokenizer is const once loaded, and a large dataset's prompts take it tens of seconds alone.
    Napi::Value token_counts(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        core(env);
        if (!info[0].IsArray()) throw Napi::TypeError::New(env, "tokenCounts: texts must be an array of strings");
        Napi::Array arr = info[0].As<Napi::Array>();
        auto texts = std::make_shared<std::vector<std::string>>();
        texts->reserve(arr.Length());
        for (uint32_t i = 0; i < arr.Length(); ++i) {
            Napi::Value v = arr.Get(i);
            if (!v.IsString()) throw Napi::TypeError::New(env, "tokenCounts: text " + std::to_string(i) + " is not a string");
            texts->push_back(v.As<Napi::String>());
        }
        const bool parse_special = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
        auto core = core_;
        auto counts = std::make_shared<std::vector<int32_t>>(texts->size());
        return PromiseJob::start(env,
            [core, texts, parse_special, counts] {
                parallel_for((int64_t) texts->size(), core->backends->n_threads(), [&](int64_t i) {
                    (*counts)[(size_t) i] = (int32_t) core->vocab->tokenize((*texts)[(size_t) i], false, parse_special).size();
                });
            },
            [counts](Napi::Env env) -> Napi::Value {
                Napi::Int32Array out = Napi::Int32Array::New(env, counts->size());
                std::copy(counts->begin(), counts->end(), out.Data());
                return out;
            });
    }

    Napi::Value detokenize(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelCore & c = core(env);
        if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            throw Napi::TypeError::New(env, "detokenize: tokens must be an Int32Array");
        }
        Napi::Int32Array a = info[0].As<Napi::Int32Array>();
        std::vector<int32_t> t(a.Data(), a.Data() + a.ElementLength());
        const bool special = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
        return Napi::String::New(env, guard(env, [&] { return c.vocab->detokenize(t, special); }));
    }

    Napi::Value token_piece(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelCore & c = core(env);
        const int32_t id = info[0].As<Napi::Number>().Int32Value();
        const bool special = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
        return Napi::String::New(env, guard(env, [&] { return c.vocab->piece(id, special); }));
    }

    Napi::Value chat_template(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        const std::string & t = core(env).vocab->chat_template();
        return t.empty() ? env.Null() : Napi::String::New(env, t);
    }

    Napi::Value apply_chat_template(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelCore & c = core(env);
        if (!info[0].IsArray()) throw Napi::TypeError::New(env, "applyChatTemplate: messages must be an array");
        Napi::Array arr = info[0].As<Napi::Array>();
        std::vector<ChatMessage> msgs;
        for (uint32_t i = 0; i < arr.Length(); ++i) {
            Napi::Value v = arr.Get(i);
            if (!v.IsObject()) throw Napi::TypeError::New(env, "applyChatTemplate: message " + std::to_string(i) + " is not an object");
            Napi::Object m = v.As<Napi::Object>();
            msgs.push_back({str_opt(m, "role", ""), str_opt(m, "content", "")});
        }
        const bool add_assistant = !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
        return Napi::String::New(env, guard(env, [&] { return c.vocab->apply_chat(msgs, add_assistant); }));
    }

    Napi::Value forward(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        core(env);
        auto seqs = seqs_from_js(info[0], "forward");
        const bool last_only = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
        // Optional third argument: a NativeTrainer whose adapter is applied (same model only).
        std::shared_ptr<Trainer> adapter;
        if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
            adapter = unwrap_trainer(info[2], "forward");
            if (adapter->model() != core_) throw Napi::Error::New(env, "forward: the adapter was created for another model");
        }
        auto core = core_;
        auto result = std::make_shared<ForwardResult>();
        return PromiseJob::start(env,
            [core, seqs = std::move(seqs), last_only, result, adapter] {
                std::lock_guard<std::mutex> lock(core->mu);
                PackedBatch batch = pack_sequences(seqs, core->weights->config());
                *result = run_forward(*core->weights, adapter ? adapter->adapter().view() : LoraView{}, *core->backends, batch, last_only);
            },
            [result](Napi::Env env) -> Napi::Value { return forward_result_to_js(env, std::move(*result)); });
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        core_.reset();
        return info.Env().Undefined();
    }
};

class NativeReference : public Napi::ObjectWrap<NativeReference> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeReference", {
            StaticMethod("load", &NativeReference::load),
            InstanceMethod("logits", &NativeReference::logits),
            InstanceMethod("setAdapter", &NativeReference::set_adapter),
            InstanceMethod("dispose", &NativeReference::dispose),
        });
    }

    explicit NativeReference(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeReference>(info) {
        ref_ = state_from<Holder>(info, "NativeReference is created by NativeReference.load(path, options)");
    }

private:
    struct Holder {
        std::unique_ptr<ReferenceModel> model;
        std::mutex mu;
    };
    std::shared_ptr<Holder> ref_;

    static Napi::Value load(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "NativeReference.load: path must be a string");
        const std::string path = info[0].As<Napi::String>();
        Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        ReferenceOptions opt;
        opt.gpu = bool_opt(o, "gpu", false);
        opt.n_ctx = (int) int_opt(o, "nCtx", 512);
        opt.n_threads = (int) int_opt(o, "threads", 0);
        opt.f32_kv = bool_opt(o, "f32Kv", true);
        opt.flash_attn = bool_opt(o, "flashAttn", false);
        opt.repack = bool_opt(o, "repack", true);
        auto h = std::make_shared<Holder>();
        return PromiseJob::start(env,
            [h, path, opt] { h->model = std::make_unique<ReferenceModel>(path, opt); },
            [h](Napi::Env env) -> Napi::Value {
                return construct_with(env, env.GetInstanceData<AddonState>()->reference_ctor, h);
            });
    }

    Napi::Value logits(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!ref_) throw Napi::Error::New(env, "reference model has been disposed");
        auto seqs = seqs_from_js(info[0], "logits");
        auto h = ref_;
        auto result = std::make_shared<ForwardResult>();
        return PromiseJob::start(env,
            [h, seqs = std::move(seqs), result] {
                std::lock_guard<std::mutex> lock(h->mu);
                *result = h->model->logits(seqs);
            },
            [result](Napi::Env env) -> Napi::Value { return forward_result_to_js(env, std::move(*result)); });
    }

    Napi::Value set_adapter(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!ref_) throw Napi::Error::New(env, "reference model has been disposed");
        const std::string path = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
        const float scale = info[1].IsNumber() ? info[1].As<Napi::Number>().FloatValue() : 1.0f;
        auto h = ref_;
        return PromiseJob::start(env,
            [h, path, scale] {
                std::lock_guard<std::mutex> lock(h->mu);
                h->model->set_adapter(path, scale);
            },
            [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        ref_.reset();
        return info.Env().Undefined();
    }
};

} // namespace

Napi::Function define_native_model(Napi::Env env) { return NativeModel::define(env); }

std::shared_ptr<ModelCore> model_core_of(const Napi::Value & v, const char * what) {
    Napi::Env env = v.Env();
    Napi::Function ctor = env.GetInstanceData<AddonState>()->model_ctor.Value();
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor)) {
        throw Napi::TypeError::New(env, std::string(what) + ": expected a NativeModel");
    }
    const auto & core = NativeModel::Unwrap(v.As<Napi::Object>())->core_ptr();
    if (!core) throw Napi::Error::New(env, std::string(what) + ": model has been disposed");
    return core;
}
Napi::Function define_native_reference(Napi::Env env) { return NativeReference::define(env); }

} // namespace rrr

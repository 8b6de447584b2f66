// NativeReferenceDecoder: libllama's batched greedy generation, for parity tests and bench.
#include "addon_state.h"
#include "js_async.h"
#include "js_handle.h"
#include "js_convert.h"
#include "js_generator.h"
#include "reference_decode.h"

#include <mutex>

namespace rrr {

namespace {

class NativeReferenceDecoder : public Napi::ObjectWrap<NativeReferenceDecoder> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeReferenceDecoder", {
            StaticMethod("load", &NativeReferenceDecoder::load),
            InstanceMethod("greedy", &NativeReferenceDecoder::greedy),
            InstanceMethod("dispose", &NativeReferenceDecoder::dispose),
        });
    }

    explicit NativeReferenceDecoder(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeReferenceDecoder>(info) {
        h_ = state_from<Holder>(info, "NativeReferenceDecoder is created by NativeReferenceDecoder.load(path, options)");
    }

private:
    struct Holder {
        std::unique_ptr<ReferenceDecoder> dec;
        std::mutex mu;
    };
    std::shared_ptr<Holder> h_;

    static Napi::Value load(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "NativeReferenceDecoder.load: path must be a string");
        const std::string path = info[0].As<Napi::String>();
        Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        RefDecodeOptions opt;
        opt.gpu = bool_opt(o, "gpu", false);
        opt.n_threads = (int) int_opt(o, "threads", 0);
        opt.f32_kv = bool_opt(o, "f32Kv", false);
        opt.flash_attn = bool_opt(o, "flashAttn", false);
        opt.kv_unified = bool_opt(o, "kvUnified", true);
        opt.n_ubatch = (int) int_opt(o, "nUbatch", opt.n_ubatch);
        auto h = std::make_shared<Holder>();
        return PromiseJob::start(env,
            [h, path, opt] { h->dec = std::make_unique<ReferenceDecoder>(path, opt); },
            [h](Napi::Env env) -> Napi::Value {
                return construct_with(env, env.GetInstanceData<AddonState>()->ref_decoder_ctor, h);
            });
    }

    Napi::Value greedy(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!h_) throw Napi::Error::New(env, "reference decoder has been disposed");
        if (!info[0].IsArray()) throw Napi::TypeError::New(env, "greedy: expected an array of {prompt, n} groups");
        Napi::Array arr = info[0].As<Napi::Array>();
        std::vector<RefGroup> groups(arr.Length());
        for (uint32_t i = 0; i < arr.Length(); ++i) {
            if (!arr.Get(i).IsObject()) throw Napi::TypeError::New(env, "greedy: group " + std::to_string(i) + " is not an object");
            Napi::Object g = arr.Get(i).As<Napi::Object>();
            Napi::Value p = g.Get("prompt");
            if (!p.IsTypedArray() || p.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
                throw Napi::TypeError::New(env, "greedy: group " + std::to_string(i) + " prompt is not an Int32Array");
            }
            Napi::Int32Array a = p.As<Napi::Int32Array>();
            groups[i].prompt.assign(a.Data(), a.Data() + a.ElementLength());
            groups[i].n = (int) int_opt(g, "n", 1);
        }
        Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        const int32_t max_tokens = (int32_t) int_opt(o, "maxTokens", 16);
        const bool ignore_eos = bool_opt(o, "ignoreEos", false);
        auto h = h_;
        auto r = std::make_shared<RefDecodeResult>();
        return PromiseJob::start(env,
            [h, groups = std::move(groups), max_tokens, ignore_eos, r] {
                std::lock_guard<std::mutex> lock(h->mu);
                *r = h->dec->greedy(groups, max_tokens, ignore_eos);
            },
            [r](Napi::Env env) -> Napi::Value {
                Napi::Array groups = Napi::Array::New(env, r->tokens.size());
                for (size_t g = 0; g < r->tokens.size(); ++g) {
                    Napi::Array samples = Napi::Array::New(env, r->tokens[g].size());
                    for (size_t j = 0; j < r->tokens[g].size(); ++j) {
                        const auto & t = r->tokens[g][j];
                        Napi::Int32Array a = Napi::Int32Array::New(env, t.size());
                        std::copy(t.begin(), t.end(), a.Data());
                        samples.Set((uint32_t) j, a);
                    }
                    groups.Set((uint32_t) g, samples);
                }
                Napi::Object o = Napi::Object::New(env);
                o.Set("tokens", groups);
                Napi::Object st = Napi::Object::New(env);
                st.Set("prefillTokens", (double) r->prefill_tokens);
                st.Set("decodeTokens", (double) r->decode_tokens);
                st.Set("generated", (double) r->generated);
                st.Set("prefillMs", r->prefill_ms);
                st.Set("decodeMs", r->decode_ms);
                o.Set("stats", st);
                o.Set("nCells", (double) r->n_ctx);
                o.Set("kvBytes", (double) r->kv_bytes);
                return o;
            });
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        h_.reset();
        return info.Env().Undefined();
    }
};

} // namespace

Napi::Function define_native_reference_decoder(Napi::Env env) { return NativeReferenceDecoder::define(env); }

} // namespace rrr

// Module entry: registers the wrapped classes and the free functions JS sees as `native`.
#include <napi.h>

#include <cstdlib>
#include <cstring>

#include "addon_state.h"
#include "backend.h"
#include "gpu_emulation.h"
#include "js_async.h"
#include "js_convert.h"
#include "js_generator.h"
#include "js_model.h"
#include "js_trainer.h"
#include "tiny_model.h"

#include "llama.h"

namespace rrr {
namespace {

// libllama and ggml narrate every load on stderr; users see our own one-line messages instead.
// RRR_VERBOSE=1 restores their output for debugging.
void quiet_log(ggml_log_level level, const char * text, void *) {
    static const bool verbose = [] {
        const char * v = std::getenv("RRR_VERBOSE");
        return v && *v && std::strcmp(v, "0") != 0;
    }();
    if (verbose) std::fputs(text, stderr);
}

Napi::Value devices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto list = list_devices();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", list[i].name);
        o.Set("description", list[i].description);
        o.Set("type", list[i].type);
        o.Set("memoryFree", (double) list[i].memory_free);
        o.Set("memoryTotal", (double) list[i].memory_total);
        arr.Set((uint32_t) i, o);
    }
    return arr;
}

Napi::Value build_info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
#ifdef RRR_HAVE_CUDA
    o.Set("cuda", true);
#else
    o.Set("cuda", false);
#endif
    o.Set("cudaEmulation", gpu_emulation_built());
    o.Set("system", llama_print_system_info());
    return o;
}

Napi::Value write_tiny(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "writeTinyModel: expected a spec object");
    Napi::Object o = info[0].As<Napi::Object>();
    TinyModelSpec s;
    s.arch = str_opt(o, "arch", s.arch);
    s.vocab_path = str_opt(o, "vocabPath", "");
    s.out_path = str_opt(o, "outPath", "");
    s.type = str_opt(o, "type", s.type);
    s.embd_type = str_opt(o, "embdType", s.embd_type);
    s.n_embd = int_opt(o, "nEmbd", s.n_embd);
    s.n_layer = int_opt(o, "nLayer", s.n_layer);
    s.n_head = int_opt(o, "nHead", s.n_head);
    s.n_head_kv = int_opt(o, "nHeadKv", s.n_head_kv);
    s.head_dim = int_opt(o, "headDim", s.head_dim);
    s.n_ff = int_opt(o, "nFf", s.n_ff);
    s.n_ctx = int_opt(o, "nCtx", s.n_ctx);
    s.rope_base = (float) num_opt(o, "ropeBase", s.rope_base);
    s.output_gain = (float) num_opt(o, "outputGain", s.output_gain);
    s.init = str_opt(o, "init", s.init);
    s.copy_offset = int_opt(o, "copyOffset", s.copy_offset);
    s.tied = o.Get("tied").IsBoolean() ? (o.Get("tied").As<Napi::Boolean>().Value() ? 1 : 0) : -1;
    s.seed = (uint64_t) int_opt(o, "seed", (int64_t) s.seed);
    auto bytes = std::make_shared<uint64_t>(0);
    return PromiseJob::start(env, [s, bytes] { *bytes = write_tiny_model(s); },
                             [bytes](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, (double) *bytes); });
}

Napi::Object init_module(Napi::Env env, Napi::Object exports) {
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    auto * state = new AddonState();
    Napi::Function model = define_native_model(env);
    Napi::Function reference = define_native_reference(env);
    Napi::Function trainer = define_native_trainer(env);
    state->model_ctor = Napi::Persistent(model);
    state->reference_ctor = Napi::Persistent(reference);
    state->trainer_ctor = Napi::Persistent(trainer);
    Napi::Function generator = define_native_generator(env);
    Napi::Function ref_decoder = define_native_reference_decoder(env);
    state->generator_ctor = Napi::Persistent(generator);
    state->ref_decoder_ctor = Napi::Persistent(ref_decoder);
    env.SetInstanceData<AddonState>(state);
    exports.Set("NativeModel", model);
    exports.Set("NativeReference", reference);
    exports.Set("NativeTrainer", trainer);
    exports.Set("NativeGenerator", generator);
    exports.Set("NativeReferenceDecoder", ref_decoder);
    exports.Set("mergeAdapter", Napi::Function::New(env, merge_adapter_js, "mergeAdapter"));
    exports.Set("devices", Napi::Function::New(env, devices, "devices"));
    exports.Set("buildInfo", Napi::Function::New(env, build_info, "buildInfo"));
    exports.Set("writeTinyModel", Napi::Function::New(env, write_tiny, "writeTinyModel"));
    return exports;
}

} // namespace
} // namespace rrr

static Napi::Object InitRrrNative(Napi::Env env, Napi::Object exports) { return rrr::init_module(env, exports); }
NODE_API_MODULE(rrr_native, InitRrrNative)

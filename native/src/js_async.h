// Runs a native job on libuv's thread pool and settles a Promise with its result, so heavy
// calls never block the JS event loop. rrr::Error messages reach JS unchanged; other exceptions
// are marked as internal errors.
#pragma once
#include <functional>
#include <napi.h>

#include "errors.h"

namespace rrr {

class PromiseJob : public Napi::AsyncWorker {
public:
    using Work = std::function<void()>;
    using Result = std::function<Napi::Value(Napi::Env)>;

    static Napi::Promise start(Napi::Env env, Work work, Result result) {
        auto * job = new PromiseJob(env, std::move(work), std::move(result));
        Napi::Promise p = job->deferred_.Promise();
        job->Queue();
        return p;
    }

protected:
    void Execute() override {
        try {
            work_();
        } catch (const Error & e) {
            SetError(e.what());
        } catch (const std::bad_alloc &) {
            SetError("out of host memory");
        } catch (const std::exception & e) {
            SetError(std::string("internal error: ") + e.what());
        }
    }
    void OnOK() override {
        Napi::Env env = Env();
        try {
            deferred_.Resolve(result_(env));
        } catch (const Napi::Error & e) {
            reject(e);
        }
    }
    void OnError(const Napi::Error & e) override { reject(e); }

private:
    // Rejecting fails too where the environment is shutting down (a worker thread ended, or the
    // process exits, with this job in flight): no one is left to tell, and an exception out of
    // here would abort the whole process.
    void reject(const Napi::Error & e) {
        try {
            deferred_.Reject(e.Value());
        } catch (const Napi::Error &) {
        }
    }

    PromiseJob(Napi::Env env, Work work, Result result)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), result_(std::move(result)) {}

    Napi::Promise::Deferred deferred_;
    Work work_;
    Result result_;
};

// Runs `fn` and turns rrr::Error into a JS exception for synchronous methods.
template <typename F>
auto guard(Napi::Env env, F && fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const Error & e) {
        throw Napi::Error::New(env, e.what());
    } catch (const std::exception & e) {
        throw Napi::Error::New(env, std::string("internal error: ") + e.what());
    }
}

} // namespace rrr

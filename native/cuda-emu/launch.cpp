// Kernel launches on the CPU for builds without CUDA (include/cuda_runtime.h says why). Each
// block runs alone; its threads are fibers (ucontext) on the calling thread, taken in turn, each
// until it waits at a barrier (__syncthreads, or the two a warp shuffle takes) or ends. A
// barrier opens when every thread of its block (or warp) still running has reached it; a round
// in which no thread moves is a deadlock (threads waiting at barriers the others never reach),
// reported as a launch failure rather than hung.
#include <cuda_runtime.h>

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

namespace rrr_emu {

namespace {

constexpr size_t kStackBytes = 128 << 10;
constexpr size_t kDefaultSharedLimit = 48 << 10; // dynamic shared memory a kernel gets without opting in

struct Barrier {
    unsigned arrived = 0, generation = 0;
};

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    bool done = false;
};

// One launch's state while it runs, reached from the kernel's calls through tl_run.
struct Run {
    const std::function<void()> * body = nullptr;
    dim3 grid, block;
    uint3 bid{0, 0, 0};
    std::vector<Fiber> fibers;
    std::unique_ptr<char[]> stacks; // left unwritten: a fiber touches only the pages it uses
    std::vector<unsigned char> shared;
    ucontext_t main;
    size_t current = 0;
    unsigned live = 0;
    bool progress = false, deadlock = false;
    Barrier block_bar;
    std::vector<Barrier> warp_bars;
    std::vector<unsigned> warp_live;
    std::vector<uint64_t> slots;
};

thread_local Run * tl_run = nullptr;
thread_local cudaError_t tl_error = cudaSuccess;

Run & run() { return *tl_run; }
unsigned linear(const uint3 & t, const dim3 & b) { return t.x + b.x * (t.y + b.y * t.z); }

void yield_to_main() {
    Run & r = run();
    swapcontext(&r.fibers[r.current].ctx, &r.main);
}

// Opens `b` where all its `members` still running have arrived.
void open_if_full(Barrier & b, unsigned members) {
    if (b.arrived > 0 && b.arrived >= members) {
        b.arrived = 0;
        ++b.generation;
    }
}

void wait_at(Barrier & b, const unsigned & members) {
    Run & r = run();
    r.progress = true;
    const unsigned gen = b.generation;
    ++b.arrived;
    open_if_full(b, members);
    while (b.generation == gen) yield_to_main();
}

void fiber_entry() {
    Run & r = run();
    (*r.body)();
    Fiber & f = r.fibers[r.current];
    f.done = true;
    r.progress = true;
    --r.live;
    const unsigned w = linear(f.tid, r.block) / 32;
    --r.warp_live[w];
    // threads that ended no longer hold a barrier back
    open_if_full(r.block_bar, r.live);
    open_if_full(r.warp_bars[w], r.warp_live[w]);
    // returning switches to uc_link, the launch's loop
}

const char * launch_error(dim3 grid, dim3 block, size_t shared) {
    const uint64_t threads = (uint64_t) block.x * block.y * block.z;
    if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) return "an empty grid or block";
    if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) return "a block larger than 1024 threads (x, y <= 1024, z <= 64)";
    if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) return "a grid past 2^31 - 1 blocks in x or 65,535 in y or z";
    if (shared > kDefaultSharedLimit) return "more than 48 KiB of dynamic shared memory without cudaFuncSetAttribute";
    return nullptr;
}

void run_block(Run & r) {
    const unsigned n = (unsigned) r.fibers.size();
    r.live = n;
    r.block_bar = Barrier{};
    std::fill(r.warp_bars.begin(), r.warp_bars.end(), Barrier{});
    for (unsigned w = 0; w < r.warp_live.size(); ++w) r.warp_live[w] = std::min(32u, n - 32 * w);
    // shared memory starts out as whatever was there: NaNs make a read before a write show
    std::fill(r.shared.begin(), r.shared.end(), (unsigned char) 0xff);
    for (unsigned i = 0; i < n; ++i) {
        Fiber & f = r.fibers[i];
        f.done = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = r.stacks.get() + (size_t) i * kStackBytes;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = &r.main;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    for (;;) {
        r.progress = false;
        bool any = false;
        for (unsigned i = 0; i < n; ++i) {
            if (r.fibers[i].done) continue;
            any = true;
            r.current = i;
            swapcontext(&r.main, &r.fibers[i].ctx);
        }
        if (!any) return;
        if (!r.progress) {
            r.deadlock = true;
            return;
        }
    }
}

} // namespace

const uint3 & thread_idx() { return run().fibers[run().current].tid; }
const uint3 & block_idx() { return run().bid; }
const dim3 & block_dim() { return run().block; }
const dim3 & grid_dim() { return run().grid; }

void sync_block() { wait_at(run().block_bar, run().live); }

uint64_t shuffle_xor(uint64_t v, int mask) {
    Run & r = run();
    const unsigned me = linear(thread_idx(), r.block), w = me / 32, lane = me % 32;
    r.slots[me] = v;
    wait_at(r.warp_bars[w], r.warp_live[w]);
    const unsigned partner = 32 * w + (lane ^ (unsigned) mask);
    const uint64_t out = (lane ^ (unsigned) mask) < 32 && partner < r.fibers.size() && !r.fibers[partner].done ? r.slots[partner] : v;
    wait_at(r.warp_bars[w], r.warp_live[w]); // every lane has read before any writes again
    return out;
}

void * dynamic_shared() { return run().shared.data(); }

void launch(const std::function<void()> & body, dim3 grid, dim3 block, size_t shared, cudaStream_t) {
    if (tl_run) {
        std::fprintf(stderr, "emulated CUDA: a kernel launched a kernel, which the emulation does not run\n");
        tl_error = cudaErrorLaunchFailure;
        return;
    }
    // The GPU's error code says only "invalid configuration": the emulation names what was wrong.
    if (const char * why = launch_error(grid, block, shared)) {
        std::fprintf(stderr, "emulated CUDA: launch refused: %s (grid %u x %u x %u, block %u x %u x %u, %zu bytes of dynamic shared memory)\n", why, grid.x, grid.y, grid.z,
                     block.x, block.y, block.z, shared);
        tl_error = cudaErrorInvalidConfiguration;
        return;
    }
    Run r;
    r.body = &body;
    r.grid = grid;
    r.block = block;
    const unsigned n = block.x * block.y * block.z;
    r.fibers.resize(n);
    for (unsigned z = 0; z < block.z; ++z) {
        for (unsigned y = 0; y < block.y; ++y) {
            for (unsigned x = 0; x < block.x; ++x) r.fibers[linear({x, y, z}, block)].tid = {x, y, z};
        }
    }
    r.stacks.reset(new char[(size_t) n * kStackBytes]);
    r.shared.resize(shared);
    r.warp_bars.resize((n + 31) / 32);
    r.warp_live.resize((n + 31) / 32);
    r.slots.resize(n);
    tl_run = &r;
    for (unsigned z = 0; z < grid.z && !r.deadlock; ++z) {
        for (unsigned y = 0; y < grid.y && !r.deadlock; ++y) {
            for (unsigned x = 0; x < grid.x && !r.deadlock; ++x) {
                r.bid = {x, y, z};
                run_block(r);
            }
        }
    }
    tl_run = nullptr;
    if (r.deadlock) {
        std::fprintf(stderr, "emulated CUDA: threads of block (%u, %u, %u) wait at a barrier the others cannot reach (block %u x %u x %u)\n", r.bid.x, r.bid.y, r.bid.z, block.x,
                     block.y, block.z);
        tl_error = cudaErrorLaunchFailure;
    }
}

} // namespace rrr_emu

cudaError_t cudaGetLastError() {
    const cudaError_t e = rrr_emu::tl_error;
    rrr_emu::tl_error = cudaSuccess;
    return e;
}

const char * cudaGetErrorString(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated launch)";
        case cudaErrorLaunchFailure: return "unspecified launch failure (emulated: threads deadlocked at barriers, or a launch from a kernel)";
    }
    return "unknown error";
}

cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t * stream, unsigned) {
    *stream = nullptr;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

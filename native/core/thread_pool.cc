#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cstdlib>
#include <exception>

namespace fovea {

namespace {
thread_local bool in_pool_task = false;

// How long an idle worker, or a caller waiting for the last chunk, spins
// before sleeping. Ops come in quick succession (the phases of a conv, the
// layers of a model), and waking a sleeping thread takes tens of
// microseconds on a VM, per parallel_for. Measured on the dev VM (ResNet-50
// 224 conv layers, fovea_bench, 2 threads, alternating): no spin 44.5-47.8
// ms, 20 us 42-48, 50 us 40.5-46, 150 us 43-44. A spin this short costs
// little CPU when the pool really is idle.
constexpr auto kSpin = std::chrono::microseconds(50);

template <class Ready>
bool spin_until(Ready ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; i++) {
        if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if ((i & 63) == 63 && std::chrono::steady_clock::now() >= until) return false;
    }
}
}

struct ThreadPool::Job {
    const RangeFn * fn = nullptr;
    int64_t n = 0;
    int64_t chunk = 1;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex mutex;
    std::condition_variable finished;
};

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; i++) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto & t : workers_) t.join();
}

void ThreadPool::run_chunks(Job & job) {
    bool was_in_task = in_pool_task;
    in_pool_task = true;
    for (;;) {
        int64_t begin = job.next.fetch_add(job.chunk);
        if (begin >= job.n) break;
        int64_t end = std::min(job.n, begin + job.chunk);
        if (!job.failed.load(std::memory_order_relaxed)) {
            try {
                (*job.fn)(begin, end);
            } catch (...) {
                std::lock_guard<std::mutex> lock(job.mutex);
                if (!job.error) job.error = std::current_exception();
                job.failed = true;
            }
        }
        if (job.done.fetch_add(end - begin) + (end - begin) == job.n) {
            std::lock_guard<std::mutex> lock(job.mutex);
            job.finished.notify_all();
        }
    }
    in_pool_task = was_in_task;
}

void ThreadPool::worker_loop() {
    for (;;) {
        std::shared_ptr<Job> job;
        spin_until([&] { return queued_.load(std::memory_order_acquire) > 0; });
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            job = queue_.front();
            // Leave the job queued until its chunks are all claimed, so every
            // idle worker can join it.
            if (job->next.load() >= job->n) {
                queue_.pop_front();
                queued_.fetch_sub(1);
                continue;
            }
        }
        run_chunks(*job);
        std::lock_guard<std::mutex> lock(mutex_);
        if (!queue_.empty() && queue_.front() == job) {
            queue_.pop_front();
            queued_.fetch_sub(1);
        }
    }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const RangeFn & fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (threads_ == 1 || in_pool_task || n <= grain) {
        fn(0, n);
        return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    // About four chunks per thread balances load without much overhead.
    job->chunk = std::max(grain, (n + threads_ * 4 - 1) / (threads_ * 4));
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(job);
        queued_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_chunks(*job);
    if (!spin_until([&] { return job->done.load() == job->n; })) {
        std::unique_lock<std::mutex> lock(job->mutex);
        job->finished.wait(lock, [&] { return job->done.load() == job->n; });
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto it = queue_.begin(); it != queue_.end(); ++it) {
            if (*it == job) {
                queue_.erase(it);
                queued_.fetch_sub(1);
                break;
            }
        }
    }
    if (job->error) std::rethrow_exception(job->error);
}

ThreadPool & default_thread_pool() {
    static ThreadPool * pool = [] {
        int n = static_cast<int>(std::thread::hardware_concurrency());
        if (const char * env = std::getenv("FOVEA_NUM_THREADS")) {
            int v = std::atoi(env);
            if (v > 0) n = v;
        }
        // Never destroyed: joining threads during static destruction can hang
        // when the process exits from inside a Node worker.
        return new ThreadPool(n > 0 ? n : 1);
    }();
    return *pool;
}

}  // namespace fovea

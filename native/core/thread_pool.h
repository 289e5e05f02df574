// A fixed pool of worker threads sized to the machine. parallel_for splits a
// range into chunks that the workers and the calling thread take in turn.
// Several threads may call parallel_for at once (one per AsyncWorker); calls
// made from inside a pool task run inline, so nesting never deadlocks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fovea {

class ThreadPool {
  public:
    using RangeFn = std::function<void(int64_t begin, int64_t end)>;

    // threads = total parallelism including the caller; 1 means no workers.
    explicit ThreadPool(int threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool & operator=(const ThreadPool &) = delete;

    int size() const { return threads_; }

    // Runs fn over [0, n) in chunks of at least `grain` items. Exceptions from
    // fn are rethrown on the caller (the first one; the rest of the work stops).
    void parallel_for(int64_t n, int64_t grain, const RangeFn & fn);

  private:
    struct Job;
    void worker_loop();
    static void run_chunks(Job & job);

    int threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::atomic<int64_t> queued_{0};  // queue_.size(), for spinning workers that do not take the lock
    bool stopping_ = false;
};

// Process-wide pool: FOVEA_NUM_THREADS, else the number of hardware threads.
ThreadPool & default_thread_pool();

inline void parallel_for(int64_t n, int64_t grain, const ThreadPool::RangeFn & fn) {
    default_thread_pool().parallel_for(n, grain, fn);
}

}  // namespace fovea

// A persistent thread pool: the workers are created once; parallel_for hands them tasks and the
// calling thread works too. No thread is created per call. Workers spin for a short while after
// each job (back-to-back decode calls find them awake) and then sleep on a condition variable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace nk {

class ThreadPool {
 public:
  // n_threads counts the caller: ThreadPool(1) runs everything inline, ThreadPool(2) adds one
  // worker. 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(unsigned n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned size() const { return n_threads_; }

  // Calls fn(task, thread) for every task in [0, n_tasks), thread in [0, size()), and returns
  // when all are done. Tasks are taken dynamically. Not reentrant: do not call parallel_for from
  // inside fn, and call it from one thread at a time.
  template <class F>
  void parallel_for(size_t n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run(n_tasks, [](void* ctx, size_t task, unsigned thread) { (*static_cast<Fn*>(ctx))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

  // Splits [0, n) into at most size() contiguous chunks of at least min_chunk items each and
  // calls fn(begin, end, thread) once per chunk. Runs inline (one chunk) when n < 2*min_chunk:
  // waking a worker costs more than tiny work (docs/kernels.md lists measured grain sizes).
  // align rounds chunk boundaries to multiples of align (e.g. a kernel's row tile).
  template <class F>
  void parallel_range(size_t n, size_t min_chunk, F&& fn, size_t align = 1) {
    if (min_chunk == 0) min_chunk = 1;
    if (align == 0) align = 1;
    size_t chunks = n / min_chunk;
    if (chunks > n_threads_) chunks = n_threads_;
    if (chunks <= 1) {
      if (n > 0) fn(size_t{0}, n, 0u);
      return;
    }
    size_t per = (n + chunks - 1) / chunks;
    per = (per + align - 1) / align * align;
    chunks = (n + per - 1) / per;
    parallel_for(chunks, [&](size_t c, unsigned thread) {
      size_t b = c * per, e = b + per < n ? b + per : n;
      fn(b, e, thread);
    });
  }

 private:
  using TaskFn = void (*)(void*, size_t, unsigned);
  void run(size_t n_tasks, TaskFn fn, void* ctx);
  void worker(unsigned index);
  void work(unsigned thread);
  void wake_all();

  unsigned n_threads_;
  std::vector<std::thread> workers_;
  // The current job; written by the caller only while no worker is inside a job.
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  size_t n_tasks_ = 0;
  alignas(64) std::atomic<size_t> next_{0};  // next task index of the current job
  // Job state: generation << 32 | closed bit | number of workers inside the job. A worker may
  // enter only an open job of the generation it was woken for; the caller closes the job once
  // every task is claimed and waits only for workers that entered, so a worker that was not
  // scheduled in time never delays the caller (it finds the job closed and goes back to waiting).
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};  // what idle workers spin on
  std::atomic<unsigned> sleepers_{0};               // workers asleep on sleep_cv_
  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<bool> stop_{false};
};

}  // namespace nk

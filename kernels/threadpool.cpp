#include "nk/threadpool.h"

#include <chrono>
#include <mutex>

namespace nk {

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// How long an idle worker spins before sleeping: long enough to bridge the gap between the
// back-to-back kernel calls of one decode step, short enough not to burn a core between steps.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

ThreadPool::ThreadPool(unsigned n_threads) {
  if (n_threads == 0) n_threads = std::thread::hardware_concurrency();
  n_threads_ = n_threads ? n_threads : 1;
  workers_.reserve(n_threads_ - 1);
  for (unsigned i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  wake_all();
  for (auto& t : workers_) t.join();
}

namespace {
constexpr uint64_t kClosed = uint64_t{1} << 31;
constexpr uint64_t kActiveMask = kClosed - 1;
}  // namespace

// Taking the mutex orders the notify after any sleeper's check of generation_ (made under the
// mutex), so no wake-up is lost. (std::atomic::wait/notify_all was tried first: notify_all made a
// futex syscall on every job until the woken worker actually ran, 1.2 us per call on the loaded
// dev machine; pthread_cond_broadcast skips the syscall once the waiter has been signalled.)
void ThreadPool::wake_all() {
  { std::lock_guard<std::mutex> lock(sleep_mutex_); }
  sleep_cv_.notify_all();
}

void ThreadPool::work(unsigned thread) {
  for (;;) {
    const size_t task = next_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) break;
    fn_(ctx_, task, thread);
  }
}

void ThreadPool::run(size_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks == 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (size_t t = 0; t < n_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  next_.store(0, std::memory_order_relaxed);
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  state_.store(uint64_t{gen} << 32);  // open, nobody inside
  // seq_cst pairs with the sleepers_ increment in worker(): either we see the sleeper and wake
  // it, or it sees the new generation before it sleeps.
  generation_.store(gen);
  if (sleepers_.load() > 0) wake_all();
  work(0);
  // Every task is claimed; close the job and wait for the workers still running theirs.
  uint64_t s = state_.fetch_or(kClosed, std::memory_order_acq_rel) | kClosed;
  for (unsigned spins = 0; (s & kActiveMask) != 0; ++spins) {
    cpu_relax();
    if (spins > (1u << 14)) std::this_thread::yield();  // a worker lost its core
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker(unsigned index) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      unsigned spins = 0;
      while ((g = generation_.load(std::memory_order_acquire)) == seen) {
        cpu_relax();
        if ((++spins & 63) == 0 && std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lock(sleep_mutex_);
          sleepers_.fetch_add(1);
          sleep_cv_.wait(lock, [&] { return generation_.load() != seen; });
          sleepers_.fetch_sub(1);
        }
      }
    }
    seen = g;
    if (stop_.load()) return;
    // Enter the job if it is still open.
    uint64_t s = state_.load(std::memory_order_acquire);
    bool entered = false;
    while ((s >> 32) == g && !(s & kClosed)) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
        entered = true;
        break;
      }
    }
    if (!entered) continue;
    work(index);
    state_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace nk

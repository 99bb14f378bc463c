// Thread pool: every task runs exactly once, the caller participates, ranges cover [0, n).
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "nk/threadpool.h"

TEST_CASE("parallel_for runs every task once, repeatedly, for 1..4 threads") {
  for (unsigned th : {1u, 2u, 3u, 4u}) {
    nk::ThreadPool pool(th);
    CHECK(pool.size() == th);
    for (size_t n : {0, 1, 2, 3, 7, 64, 1000}) {
      for (int rep = 0; rep < 50; ++rep) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<unsigned> bad_thread{0};
        pool.parallel_for(n, [&](size_t t, unsigned thread) {
          hits[t].fetch_add(1);
          if (thread >= th) bad_thread.fetch_add(1);
        });
        for (size_t t = 0; t < n; ++t) REQUIRE(hits[t].load() == 1);
        CHECK(bad_thread.load() == 0);
      }
    }
  }
}

TEST_CASE("parallel_for: the caller works too, and results are visible after return") {
  nk::ThreadPool pool(2);
  const auto me = std::this_thread::get_id();
  std::atomic<int> by_caller{0};
  std::vector<long> out(10000, 0);
  for (int rep = 0; rep < 20; ++rep) {
    pool.parallel_for(out.size(), [&](size_t t, unsigned thread) {
      if (std::this_thread::get_id() == me) {
        by_caller.fetch_add(1);
        CHECK(thread == 0u);
      }
      out[t] = static_cast<long>(t) * rep;  // plain writes, read after return
    });
    for (size_t t = 0; t < out.size(); ++t) REQUIRE(out[t] == static_cast<long>(t) * rep);
  }
  CHECK(by_caller.load() > 0);
}

TEST_CASE("parallel_range: chunks cover [0, n) without overlap, honour min_chunk and align") {
  nk::ThreadPool pool(3);
  for (size_t n : {0, 1, 5, 8, 63, 64, 65, 1000}) {
    for (size_t min_chunk : {1, 4, 16, 100}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> chunks{0};
      pool.parallel_range(n, min_chunk, [&](size_t b, size_t e, unsigned) {
        chunks.fetch_add(1);
        CHECK(b < e);
        if (e != n) CHECK(b % 4 == 0);
        if (e != n) CHECK(e % 4 == 0);
        for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
      }, 4);
      for (size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
      if (n < 2 * min_chunk) CHECK(chunks.load() <= 1);  // small work runs inline
      CHECK(chunks.load() <= 3);
    }
  }
}

TEST_CASE("pool survives idle periods (workers sleep and wake)") {
  nk::ThreadPool pool(2);
  for (int rep = 0; rep < 3; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // longer than the spin window
    std::atomic<int> count{0};
    pool.parallel_for(100, [&](size_t, unsigned) { count.fetch_add(1); });
    CHECK(count.load() == 100);
  }
}

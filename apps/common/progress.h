// Progress on stderr: a redrawn bar with rate and ETA on a terminal, plain periodic lines
// otherwise (logs, CI). Thread-safe: workers call tick().
#pragma once
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>

namespace needle::app {

class Progress {
 public:
  // total = 0: unknown. unit names what is counted ("examples", "steps").
  Progress(std::string label, size_t total, std::string unit, bool enabled = true);
  ~Progress();
  void tick(size_t n = 1);
  // Extra text shown after the rate (e.g. "loss 1.234").
  void set_status(std::string s);
  void finish();
  size_t done() const { return done_.load(); }
  double elapsed_s() const;

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  size_t total_;
  bool enabled_, tty_, finished_ = false;
  std::atomic<size_t> done_{0};
  std::mutex mu_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace needle::app

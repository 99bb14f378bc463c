#include "common/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace needle::app {

using Clock = std::chrono::steady_clock;

Progress::Progress(std::string label, size_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled),
      tty_(isatty(2) != 0), start_(Clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

double Progress::elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

void Progress::tick(size_t n) {
  done_ += n;
  if (!enabled_) return;
  auto now = Clock::now();
  // A terminal is redrawn 10 times a second; logs get a line every 10 seconds.
  const auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000);
  std::unique_lock lk(mu_, std::try_to_lock);
  if (!lk || now - last_draw_ < every) return;
  last_draw_ = now;
  draw(false);
}

void Progress::set_status(std::string s) {
  std::lock_guard lk(mu_);
  status_ = std::move(s);
}

void Progress::finish() {
  std::lock_guard lk(mu_);
  if (finished_ || !enabled_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  const size_t done = done_.load();
  const double secs = elapsed_s();
  const double rate = secs > 0 ? done / secs : 0;
  std::string eta;
  if (total_ && rate > 0 && done < total_) eta = fmt::format(" ETA {:.0f}s", (total_ - done) / rate);
  std::string counts = total_ ? fmt::format("{}/{}", done, total_) : fmt::format("{}", done);
  std::string tail = fmt::format("{} {} {:.1f} {}/s{}{}{}", counts, unit_, rate, unit_, eta,
                                 status_.empty() ? "" : "  ", status_);
  if (tty_) {
    std::string bar;
    if (total_) {
      const int width = 30, fill = (int)(width * std::min<double>(1.0, (double)done / total_));
      bar = fmt::format("[{:#<{}}{:<{}}] ", "", fill, "", width - fill);
    }
    fmt::print(stderr, "\r\033[K{}: {}{}", label_, bar, tail);
    if (final) fmt::print(stderr, "\n");
  } else {
    fmt::print(stderr, "{}: {}{}\n", label_, tail, final ? " (done)" : "");
  }
  std::fflush(stderr);
}

}  // namespace needle::app

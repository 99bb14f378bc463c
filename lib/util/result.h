// Error handling for the library: functions return Status or Result<T>; only apps print and exit.
#pragma once
#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>

namespace needle {

// An error is a one-line, human-readable message naming the problem.
struct Error {
  std::string message;
};

template <class... Args>
Error make_error(fmt::format_string<Args...> f, Args&&... args) {
  return Error{fmt::format(f, std::forward<Args>(args)...)};
}

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : err_(std::move(e.message)), ok_(false) {}  // NOLINT: implicit by design
  static Status ok() { return {}; }
  bool is_ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const std::string& message() const { return err_; }
  Error error() const { return Error{err_}; }

 private:
  std::string err_;
  bool ok_ = true;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}           // NOLINT: implicit by design
  Result(Error e) : err_(std::move(e.message)) {}  // NOLINT
  bool is_ok() const { return v_.has_value(); }
  explicit operator bool() const { return v_.has_value(); }
  T& value() & { return *v_; }
  const T& value() const& { return *v_; }
  T&& value() && { return std::move(*v_); }
  T* operator->() { return &*v_; }
  const T* operator->() const { return &*v_; }
  T& operator*() { return *v_; }
  const T& operator*() const { return *v_; }
  const std::string& message() const { return err_; }
  Error error() const { return Error{err_}; }

 private:
  std::optional<T> v_;
  std::string err_;
};

}  // namespace needle

// Propagate an error from an expression returning Status or Result<T>.
#define NEEDLE_CONCAT_INNER(a, b) a##b
#define NEEDLE_CONCAT(a, b) NEEDLE_CONCAT_INNER(a, b)
#define NEEDLE_TRY(expr)                                  \
  do {                                                    \
    auto&& needle_try_r_ = (expr);                        \
    if (!needle_try_r_) return needle_try_r_.error();     \
  } while (0)
// NEEDLE_ASSIGN(auto x, expr): x = expr.value() or return its error.
#define NEEDLE_ASSIGN(decl, expr)                                      \
  auto NEEDLE_CONCAT(needle_res_, __LINE__) = (expr);                  \
  if (!NEEDLE_CONCAT(needle_res_, __LINE__))                           \
    return NEEDLE_CONCAT(needle_res_, __LINE__).error();               \
  decl = std::move(NEEDLE_CONCAT(needle_res_, __LINE__)).value()

// json::parse and text::parse_tools over arbitrary text. Properties checked on success:
// dump_compact is a fixed point (parse(dump(v)) dumps to the same text and compares equal),
// errors are one line, an accepted tool list converts to decoder specs and compiles to a
// grammar (or fails with a one-line error).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "decode/constraint_text.h"
#include "decode/grammar.h"
#include "text/json.h"
#include "text/tools.h"

using namespace needle;

namespace {
void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) {
    std::fprintf(stderr, "error message is not one line: '%s'\n", m.c_str());
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  json::ParseOptions opt;
  opt.max_depth = 64;
  auto v = json::parse(text, opt);
  if (!v) {
    check_one_line(v.message());
  } else {
    const std::string compact = json::dump_compact(*v);
    const std::string sorted = json::dump_sorted(*v);
    // Python writes inf as Infinity, which strict JSON does not read back: skip those.
    if (compact.find("Infinity") == std::string::npos && compact.find("NaN") == std::string::npos) {
      auto again = json::parse(compact, opt);
      if (!again) std::abort();
      if (json::dump_compact(*again) != compact) std::abort();
      if (json::dump_sorted(*again) != sorted) std::abort();
      if (!json::equal(*v, *again)) std::abort();
    }
    (void)text::snake_case_names(*v);
  }

  auto tools = text::parse_tools(text);
  if (!tools) {
    check_one_line(tools.message());
    return 0;
  }
  (void)tools->model_json();
  for (const auto& t : tools->tools) {
    if (tools->find_model_name(t.model_name) == nullptr) std::abort();
    (void)tools->caller_name(t.model_name);
  }
  if (v) (void)text::restore_names(*v, *tools);
  auto specs = decode::tool_specs(*tools);
  auto g = decode::compile_grammar(specs);
  if (!g) check_one_line(g.message());
  return 0;
}

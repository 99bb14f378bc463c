// JSON Lines readers that never abort on bad data: each malformed line is reported as
// {line_no, message} and skipped. Input is read in fixed-size chunks, so memory stays bounded by
// the longest accepted line (max_line_bytes) whatever the file holds.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "text/json.h"
#include "util/result.h"

namespace needle::eval {

struct LineError {
  size_t line_no = 0;  // 1-based, counting every line (blank ones too)
  std::string message;
};

struct JsonlOptions {
  size_t max_line_bytes = size_t(16) << 20;  // a longer line is an error for that line
  json::ParseOptions parse;
};

struct JsonlLine {
  size_t line_no = 0;
  json::Value value;
};

class JsonlReader {
 public:
  // `path` "-" reads stdin. A missing file, a directory or an unreadable file is one error.
  static Result<JsonlReader> open(const std::string& path, JsonlOptions opt = {});

  JsonlReader(JsonlReader&&) noexcept;
  JsonlReader& operator=(JsonlReader&&) noexcept;
  ~JsonlReader();

  // The next line that parses. Returns false at the end of input. Blank lines are skipped
  // silently; malformed and over-long lines are appended to errors() and skipped. A read error
  // ends the input and is reported as an error on the line being read.
  bool next(JsonlLine& out);

  const std::vector<LineError>& errors() const;
  // Hands over the errors gathered so far (to print them as they come).
  std::vector<LineError> take_errors();
  // Records an error for a line that parsed but that a caller rejects (wrappers use this).
  void add_error(size_t line_no, std::string message);
  const std::string& path() const;

 private:
  struct State;
  explicit JsonlReader(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// One Needle-format example: {"query", "tools", "answers"}; tools and answers may be JSON text
// (as the original dataset files store them) or JSON values.
struct NeedleExample {
  size_t line_no = 0;
  std::string query;
  json::Value tools;    // an array of tool objects
  json::Value answers;  // an array of calls (a single call object stays an object); null if absent
  bool has_answers = false;
  json::Value line;     // the whole line, for fields a caller passes through (e.g. "id")
};

struct NeedleReadOptions {
  bool require_answers = true;  // false: prediction-only input (answers may be absent)
};

// Interprets one parsed line; the error names the missing or ill-typed field.
Result<NeedleExample> parse_needle_example(const json::Value& line, const NeedleReadOptions& opt = {});

class NeedleExampleReader {
 public:
  static Result<NeedleExampleReader> open(const std::string& path, NeedleReadOptions opt = {},
                                          JsonlOptions jopt = {});
  // The next valid example; false at end. Invalid lines go to errors() and are skipped.
  bool next(NeedleExample& out);
  const std::vector<LineError>& errors() const { return reader_.errors(); }
  std::vector<LineError> take_errors() { return reader_.take_errors(); }

 private:
  NeedleExampleReader(JsonlReader r, NeedleReadOptions opt) : reader_(std::move(r)), opt_(opt) {}
  JsonlReader reader_;
  NeedleReadOptions opt_;
};

}  // namespace needle::eval

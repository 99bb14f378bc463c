#include "eval/jsonl.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace needle::eval {

struct JsonlReader::State {
  std::string path;
  JsonlOptions opt;
  std::FILE* file = nullptr;
  bool owns_file = false;
  std::vector<char> buf = std::vector<char>(size_t(1) << 16);
  size_t pos = 0, len = 0;
  bool eof = false;
  size_t line_no = 0;
  std::vector<LineError> errors;
  std::string line;

  ~State() {
    if (owns_file && file) std::fclose(file);
  }

  enum class Got { Line, TooLong, End, ReadError };

  // Reads the next raw line (without '\n') into `line`, keeping at most max_line_bytes of it: a
  // longer line is consumed chunk by chunk and discarded.
  Got read_line() {
    line.clear();
    bool any = false, too_long = false;
    for (;;) {
      if (pos == len) {
        if (eof) break;
        // read(2), not fread: it returns what a pipe has now, so a co-process that writes
        // one line and waits for the answer is served at once.
        ssize_t r;
        do {
          r = ::read(fileno(file), buf.data(), buf.size());
        } while (r < 0 && errno == EINTR);
        pos = 0;
        len = r > 0 ? size_t(r) : 0;
        if (r <= 0) {
          eof = true;
          if (r < 0) {
            ++line_no;
            return Got::ReadError;
          }
          break;
        }
      }
      any = true;
      const char* start = buf.data() + pos;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', len - pos));
      size_t n = nl ? size_t(nl - start) : len - pos;
      if (!too_long) {
        if (line.size() + n > opt.max_line_bytes) {
          too_long = true;
          std::string().swap(line);
        } else {
          line.append(start, n);
        }
      }
      pos += n;
      if (nl) {
        ++pos;
        ++line_no;
        return too_long ? Got::TooLong : Got::Line;
      }
    }
    if (!any) return Got::End;
    ++line_no;  // a last line without '\n'
    return too_long ? Got::TooLong : Got::Line;
  }
};

JsonlReader::JsonlReader(std::unique_ptr<State> s) : s_(std::move(s)) {}
JsonlReader::JsonlReader(JsonlReader&&) noexcept = default;
JsonlReader& JsonlReader::operator=(JsonlReader&&) noexcept = default;
JsonlReader::~JsonlReader() = default;

Result<JsonlReader> JsonlReader::open(const std::string& path, JsonlOptions opt) {
  auto s = std::make_unique<State>();
  s->path = path;
  s->opt = opt;
  if (path == "-") {
    s->file = stdin;
    s->path = "<stdin>";
  } else {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return make_error("cannot open {}: {}", path, std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return make_error("cannot read {}: it is a directory", path);
    s->file = std::fopen(path.c_str(), "rb");
    if (!s->file) return make_error("cannot open {}: {}", path, std::strerror(errno));
    s->owns_file = true;
  }
  return JsonlReader(std::move(s));
}

bool JsonlReader::next(JsonlLine& out) {
  State& s = *s_;
  for (;;) {
    State::Got got = s.read_line();
    if (got == State::Got::End) return false;
    if (got == State::Got::ReadError) {
      s.errors.push_back({s.line_no, fmt::format("read error in {}: {}", s.path, std::strerror(errno))});
      return false;
    }
    if (got == State::Got::TooLong) {
      s.errors.push_back({s.line_no, fmt::format("line longer than {} bytes", s.opt.max_line_bytes)});
      continue;
    }
    std::string_view text = s.line;
    if (s.line_no == 1 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);                   // CRLF
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;           // blank
    auto v = json::parse(text, s.opt.parse);
    if (!v) {
      s.errors.push_back({s.line_no, v.message()});
      continue;
    }
    out.line_no = s.line_no;
    out.value = std::move(v).value();
    return true;
  }
}

const std::vector<LineError>& JsonlReader::errors() const { return s_->errors; }

std::vector<LineError> JsonlReader::take_errors() {
  std::vector<LineError> e;
  e.swap(s_->errors);
  return e;
}

void JsonlReader::add_error(size_t line_no, std::string message) {
  s_->errors.push_back({line_no, std::move(message)});
}

const std::string& JsonlReader::path() const { return s_->path; }

// ---- Needle examples ------------------------------------------------------------------------

namespace {

// A field that is either JSON text or a JSON value.
Result<json::Value> json_field(const json::Value& line, std::string_view name) {
  const json::Value* v = line.find(name);
  if (!v) return make_error("missing field \"{}\"", name);
  if (!v->is_string()) return *v;
  auto parsed = json::parse(v->text);
  if (!parsed) return make_error("field \"{}\" is a string that is not valid JSON: {}", name, parsed.message());
  return std::move(parsed).value();
}

}  // namespace

Result<NeedleExample> parse_needle_example(const json::Value& line, const NeedleReadOptions& opt) {
  if (!line.is_object()) return make_error("line is not a JSON object");
  NeedleExample ex;
  const json::Value* q = line.find("query");
  if (!q) return make_error("missing field \"query\"");
  if (!q->is_string()) return make_error("field \"query\" is not a string");
  ex.query = q->text;

  NEEDLE_ASSIGN(ex.tools, json_field(line, "tools"));
  if (!ex.tools.is_array()) return make_error("field \"tools\" is not a list");

  if (line.find("answers") || opt.require_answers) {
    NEEDLE_ASSIGN(ex.answers, json_field(line, "answers"));
    if (!ex.answers.is_array() && !ex.answers.is_object())
      return make_error("field \"answers\" is not a list of calls");
    ex.has_answers = true;
  }
  ex.line = line;
  return ex;
}

Result<NeedleExampleReader> NeedleExampleReader::open(const std::string& path, NeedleReadOptions opt,
                                                      JsonlOptions jopt) {
  NEEDLE_ASSIGN(JsonlReader r, JsonlReader::open(path, jopt));
  return NeedleExampleReader(std::move(r), opt);
}

bool NeedleExampleReader::next(NeedleExample& out) {
  JsonlLine l;
  while (reader_.next(l)) {
    auto ex = parse_needle_example(l.value, opt_);
    if (!ex) {
      reader_.add_error(l.line_no, ex.message());
      continue;
    }
    out = std::move(ex).value();
    out.line_no = l.line_no;
    return true;
  }
  return false;
}

}  // namespace needle::eval

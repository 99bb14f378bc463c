// needle-run: a query and a list of tools in, tool calls out (JSON).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common/cli.h"
#include "common/model_loader.h"
#include "decode/greedy.h"
#include "eval/jsonl.h"
#include "io/file.h"

using namespace needle;

namespace {

constexpr const char* kTool = "needle-run";
constexpr size_t kMaxQueryBytes = 256 << 10;  // far beyond the 1,022 query tokens the model reads
constexpr size_t kMaxToolsBytes = 64 << 20;

// UTF-8 validity (the tokenizer and JSON both need it).
bool valid_utf8(std::string_view s) { return json::valid_utf8(s); }

// Validates and, when over-long, truncates a query (on a character boundary, with a warning).
Result<std::string> check_query(std::string q) {
  while (!q.empty() && (q.back() == '\n' || q.back() == '\r')) q.pop_back();
  if (!valid_utf8(q)) return make_error("the query is not valid UTF-8");
  bool blank = true;
  for (char ch : q) blank = blank && (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
  if (blank) return make_error("the query is empty");
  if (q.size() > kMaxQueryBytes) {
    size_t cut = kMaxQueryBytes;
    while (cut > 0 && ((unsigned char)q[cut] & 0xc0) == 0x80) --cut;
    q.resize(cut);
    spdlog::warn("query is over {} bytes; only its start is read (the model sees at most 1,022 tokens)",
                 kMaxQueryBytes);
  }
  return q;
}

// --tools takes a file path or the JSON text itself.
Result<text::ToolSet> load_tools(const std::string& arg) {
  std::string s = arg;
  size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return make_error("--tools is empty");
  if (s[first] != '[' && s[first] != '{') {
    auto bytes = read_file(arg, kMaxToolsBytes);
    if (!bytes) return make_error("--tools: {}", bytes.message());
    s.assign(bytes->begin(), bytes->end());
  }
  auto v = json::parse(s);
  if (!v) return make_error("tools: invalid JSON: {}", v.message());
  if (!v->is_array()) return make_error("tools must be a JSON list of tool objects");
  return text::parse_tools(*v);
}

Result<text::ToolSet> tools_from_value(const json::Value& v) {
  if (v.is_string()) {
    auto parsed = json::parse(v.text);
    if (!parsed) return make_error("tools: invalid JSON: {}", parsed.message());
    if (!parsed->is_array()) return make_error("tools must be a JSON list of tool objects");
    return text::parse_tools(*parsed);
  }
  if (!v.is_array()) return make_error("tools must be a JSON list of tool objects");
  return text::parse_tools(v);
}

void warn_truncated(const Generation& g) {
  if (g.truncated) spdlog::warn("input is longer than the encoder's limit; truncated as the original does");
}

json::Value jsonl_result(const Generation& g) {
  auto o = json::Value::make_object();
  o.set("calls", g.calls);
  o.set("text", json::Value::from_string(g.text));
  o.set("tokens", json::Value::from_int((int64_t)g.ids.size()));
  o.set("ms", json::Value::from_double(std::round(g.ms * 1000.0) / 1000.0));
  return o;
}

void print_line(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int run_jsonl(Generator& gen, const GenerateOptions& opt, const std::string& default_tools) {
  std::optional<text::ToolSet> fallback;
  if (!default_tools.empty()) {
    auto t = load_tools(default_tools);
    if (!t) return app::fail(kTool, t.message());
    fallback = std::move(t).value();
  }
  eval::JsonlOptions jo;
  jo.max_line_bytes = kMaxToolsBytes;
  auto reader = eval::JsonlReader::open("-", jo);
  if (!reader) return app::fail(kTool, reader.message());
  // A request's "id" (any JSON value) is copied to the front of its result or error, so that
  // callers with several requests in flight (several writers on one pipe) can match them.
  auto error_line = [](size_t line_no, const std::string& msg, const json::Value* id = nullptr) {
    auto o = json::Value::make_object();
    if (id) o.set("id", *id);
    o.set("error", json::Value::from_string(fmt::format("line {}: {}", line_no, msg)));
    print_line(json::dump_compact(o));
  };
  size_t n = 0, bad = 0;
  eval::JsonlLine line;
  auto flush_errors = [&] {
    for (auto& e : reader->take_errors()) {
      error_line(e.line_no, e.message);
      ++bad;
    }
  };
  while (reader->next(line)) {
    flush_errors();
    ++n;
    auto process = [&]() -> Result<json::Value> {
      if (!line.value.is_object()) return make_error("expected a JSON object with \"query\" and \"tools\"");
      const json::Value* q = line.value.find("query");
      if (!q || !q->is_string()) return make_error("missing string field \"query\"");
      NEEDLE_ASSIGN(std::string query, check_query(q->text));
      text::ToolSet tools;
      if (const json::Value* t = line.value.find("tools")) {
        NEEDLE_ASSIGN(tools, tools_from_value(*t));
      } else if (fallback) {
        tools = *fallback;
      } else {
        return make_error("missing field \"tools\" (and no --tools given)");
      }
      NEEDLE_ASSIGN(Generation g, gen.run(query, tools, opt));
      warn_truncated(g);
      return jsonl_result(g);
    };
    const json::Value* id = line.value.is_object() ? line.value.find("id") : nullptr;
    auto r = process();
    if (r) {
      if (id) {
        auto o = json::Value::make_object();
        o.set("id", *id);
        for (auto& [k, v] : r->object) o.set(k, v);
        print_line(json::dump_compact(o));
      } else {
        print_line(json::dump_compact(*r));
      }
    } else {
      error_line(line.line_no, r.message(), id);
      ++bad;
    }
  }
  flush_errors();
  spdlog::debug("{} lines, {} errors", n + bad, bad);
  return app::kOk;
}

std::string read_stdin(size_t limit) {
  std::string s;
  char buf[65536];
  ssize_t r;
  while ((r = ::read(0, buf, sizeof buf)) != 0) {
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (s.size() < limit) s.append(buf, (size_t)r);
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "needle-run: turn a query and a list of tools (JSON) into tool calls (JSON).\n\n"
      "  needle-run [-m MODEL] --tools TOOLS.json \"What's the weather in Paris?\"\n"
      "  echo \"query\" | needle-run --tools '[{\"name\":...}]'\n"
      "  needle-run --jsonl < requests.jsonl      (one {\"query\",\"tools\"} object per line)\n\n"
      "Output: one line of JSON, the list of calls [{\"name\":...,\"arguments\":{...}}] (empty: no call).\n"
      "With --jsonl: one line per input line, in order, flushed at once:\n"
      "  {\"calls\":[...],\"text\":\"<raw model text>\",\"tokens\":n,\"ms\":t}, or {\"error\":\"line N: ...\"};\n"
      "  a request's \"id\" (any JSON value) is copied to the front of its result or error.\n"
      "Tools may be in Needle's flat form, OpenAI/JSON-Schema form or BFCL form (docs/tools.md).",
      kTool};
  app::CommonOptions common;
  app::add_common_options(app, common);
  std::string tools_arg, query, tokenizer_path, constrain = "schema";
  bool jsonl = false, stream = false;
  GenerateOptions opt;
  app.add_option("query", query, "The request; read from stdin when absent");
  app.add_option("--tools", tools_arg, "Tools: a JSON file or JSON text (a list of tool objects)");
  app.add_flag("--jsonl", jsonl, "Read {\"query\",\"tools\"} lines from stdin, write one result line each");
  app.add_flag("--stream", stream, "Print the model's text to stdout as tokens are generated, then the calls");
  app.add_option("--constrain", constrain,
                 "schema (default): calls always parse and follow the tools' schemas; reference: the "
                 "original's name/key trie; off: unconstrained")
      ->check(CLI::IsMember({"schema", "reference", "off"}));
  app.add_option("--max-tokens", opt.max_tokens, "Most decoder steps (default 511, as the original)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--top-tools", opt.top_tools,
                 "Keep only the K tools nearest the query (contrastive retrieval); 0 = all")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--tokenizer", tokenizer_path, "SentencePiece model (default: the one embedded in the model)");
  if (int rc = app::parse(app, argc, argv); rc >= 0) return rc;
  app::init_logging(common);
  opt.constrain = *decode::parse_constrain_mode(constrain);

  // Input checks that need no model come first, so bad input fails fast.
  std::optional<text::ToolSet> tools;
  if (!jsonl) {
    if (tools_arg.empty()) return app::fail(kTool, "no tools given: pass --tools FILE_OR_JSON");
    auto t = load_tools(tools_arg);
    if (!t) return app::fail(kTool, t.message());
    tools = std::move(t).value();
    if (query.empty()) {
      if (isatty(0)) spdlog::info("reading the query from stdin (end with Ctrl-D)");
      query = read_stdin(kMaxQueryBytes + 4);
    }
    auto q = check_query(query);
    if (!q) return app::fail(kTool, q.message());
    query = std::move(q).value();
  }

  auto lm = app::load_model_and_tokenizer(common, tokenizer_path);
  if (!lm) return app::fail(kTool, lm.message());
  auto gen = Generator::create((*lm)->weights, (*lm)->tokenizer, (unsigned)app::resolved_threads(common));
  if (!gen) return app::fail(kTool, gen.message());

  if (jsonl) return run_jsonl(**gen, opt, tools_arg);

  if (stream)
    opt.on_text = [](std::string_view s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
  auto g = (*gen)->run(query, *tools, opt);
  if (!g) return app::fail(kTool, g.message(), app::kRuntimeError);
  if (stream) std::fputc('\n', stdout);
  warn_truncated(*g);
  if (!g->parsed) spdlog::warn("the model's output is not valid JSON: {}", g->text);
  print_line(json::dump_compact(g->calls));
  return app::kOk;
}

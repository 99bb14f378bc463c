// JSONL readers: bad lines reported with their numbers and skipped, over-long lines discarded
// in chunks, one clear error for a missing file or a directory.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval/jsonl.h"

using namespace needle;
using namespace needle::eval;

namespace {

struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    dir = std::filesystem::temp_directory_path() /
          ("needle_jsonl_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(dir);
  }
  ~TempDir() { std::filesystem::remove_all(dir); }
  std::string write(const std::string& name, const std::string& bytes) const {
    auto p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

std::vector<JsonlLine> read_all(JsonlReader& r) {
  std::vector<JsonlLine> out;
  JsonlLine l;
  while (r.next(l)) out.push_back(l);
  return out;
}

}  // namespace

TEST_CASE("jsonl: bad lines are reported with their line numbers and skipped", "[jsonl]") {
  TempDir t;
  auto path = t.write("a.jsonl",
                      "{\"a\":1}\n"      // 1
                      "\n"               // 2 blank
                      "{bad\n"           // 3 error
                      "[1,2]\n"          // 4
                      "   \t\n"          // 5 blank
                      "{\"b\":2}\r\n"    // 6 CRLF
                      "1 2\n"            // 7 error: trailing data
                      "3");              // 8, no final newline
  auto r = JsonlReader::open(path);
  REQUIRE(r.is_ok());
  auto lines = read_all(*r);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].line_no == 1);
  CHECK(lines[0].value.find("a") != nullptr);
  CHECK(lines[1].line_no == 4);
  CHECK(lines[1].value.array.size() == 2);
  CHECK(lines[2].line_no == 6);
  CHECK(lines[3].line_no == 8);
  CHECK(lines[3].value.text == "3");
  REQUIRE(r->errors().size() == 2);
  CHECK(r->errors()[0].line_no == 3);
  CHECK_FALSE(r->errors()[0].message.empty());
  CHECK(r->errors()[1].line_no == 7);
  auto taken = r->take_errors();
  CHECK(taken.size() == 2);
  CHECK(r->errors().empty());
}

TEST_CASE("jsonl: an empty file and a BOM", "[jsonl]") {
  TempDir t;
  auto r = JsonlReader::open(t.write("e.jsonl", ""));
  REQUIRE(r.is_ok());
  CHECK(read_all(*r).empty());
  CHECK(r->errors().empty());
  auto r2 = JsonlReader::open(t.write("bom.jsonl", "\xEF\xBB\xBF{\"a\":1}\n"));
  REQUIRE(r2.is_ok());
  CHECK(read_all(*r2).size() == 1);
  CHECK(r2->errors().empty());
}

TEST_CASE("jsonl: an over-long line is an error for that line only", "[jsonl]") {
  TempDir t;
  // 200 KiB line: more than three of the reader's 64 KiB chunks, all discarded.
  std::string longline = "[\"" + std::string(200 * 1024, 'x') + "\"]";
  std::string exact = "[\"" + std::string(1020, 'y') + "\"]";  // 1024 bytes: at the limit
  auto path = t.write("long.jsonl", "{\"a\":1}\n" + longline + "\n" + exact + "\n{\"c\":3}\n" + longline);
  JsonlOptions opt;
  opt.max_line_bytes = 1024;
  auto r = JsonlReader::open(path, opt);
  REQUIRE(r.is_ok());
  auto lines = read_all(*r);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].line_no == 1);
  CHECK(lines[1].line_no == 3);
  CHECK(lines[1].value.array[0].text.size() == 1020);
  CHECK(lines[2].line_no == 4);
  REQUIRE(r->errors().size() == 2);
  CHECK(r->errors()[0].line_no == 2);
  CHECK(r->errors()[0].message.find("longer than 1024 bytes") != std::string::npos);
  CHECK(r->errors()[1].line_no == 5);
}

TEST_CASE("jsonl: a missing file and a directory are one clear error", "[jsonl]") {
  TempDir t;
  auto missing = (t.dir / "nope.jsonl").string();
  auto r = JsonlReader::open(missing);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.message().find(missing) != std::string::npos);
  CHECK(r.message().find("No such file") != std::string::npos);
  auto d = JsonlReader::open(t.dir.string());
  REQUIRE_FALSE(d.is_ok());
  CHECK(d.message().find("directory") != std::string::npos);
  CHECK_FALSE(NeedleExampleReader::open(missing).is_ok());
}

TEST_CASE("jsonl: Needle examples with tools/answers as JSON text or values", "[jsonl]") {
  TempDir t;
  auto path = t.write(
      "n.jsonl",
      // 1: the original files' form: tools and answers are JSON strings
      R"({"query":"weather in Paris","tools":"[{\"name\":\"w\",\"parameters\":{}}]","answers":"[{\"name\":\"w\",\"arguments\":{\"city\":\"Paris\"}}]"})"
      "\n"
      // 2: values
      R"({"id":7,"query":"hi","tools":[{"name":"w"}],"answers":[]})"
      "\n"
      // 3: missing query
      R"({"tools":[],"answers":[]})"
      "\n"
      // 4: tools string that is not JSON
      R"({"query":"q","tools":"[{","answers":[]})"
      "\n"
      // 5: missing answers
      R"({"query":"q","tools":[]})"
      "\n"
      // 6: answers of the wrong kind
      R"({"query":"q","tools":[],"answers":5})"
      "\n"
      // 7: not an object
      "[1]\n"
      // 8: a single call object as answers
      R"({"query":"q","tools":[],"answers":{"name":"w","arguments":{}}})"
      "\n");
  auto r = NeedleExampleReader::open(path);
  REQUIRE(r.is_ok());
  std::vector<NeedleExample> got;
  NeedleExample ex;
  while (r->next(ex)) got.push_back(ex);
  REQUIRE(got.size() == 3);
  CHECK(got[0].line_no == 1);
  CHECK(got[0].query == "weather in Paris");
  REQUIRE(got[0].tools.is_array());
  CHECK(got[0].tools.array[0].find("name")->text == "w");
  REQUIRE(got[0].answers.is_array());
  CHECK(got[0].answers.array[0].find("arguments")->find("city")->text == "Paris");
  CHECK(got[1].line_no == 2);
  CHECK(got[1].line.find("id")->text == "7");
  CHECK(got[1].answers.array.empty());
  CHECK(got[2].line_no == 8);
  CHECK(got[2].answers.is_object());
  const auto& e = r->errors();
  REQUIRE(e.size() == 5);
  CHECK(e[0].line_no == 3);
  CHECK(e[0].message.find("\"query\"") != std::string::npos);
  CHECK(e[1].line_no == 4);
  CHECK(e[1].message.find("\"tools\"") != std::string::npos);
  CHECK(e[2].line_no == 5);
  CHECK(e[2].message.find("missing field \"answers\"") != std::string::npos);
  CHECK(e[3].line_no == 6);
  CHECK(e[4].line_no == 7);
}

TEST_CASE("jsonl: answers are optional for prediction-only input", "[jsonl]") {
  NeedleReadOptions opt;
  opt.require_answers = false;
  auto v = json::parse(R"({"query":"q","tools":"[]"})");
  REQUIRE(v.is_ok());
  auto ex = parse_needle_example(*v, opt);
  REQUIRE(ex.is_ok());
  CHECK_FALSE(ex->has_answers);
  CHECK(ex->tools.is_array());
  CHECK_FALSE(parse_needle_example(*v).is_ok());
}

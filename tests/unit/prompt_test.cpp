#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "text/json.h"
#include "text/prompt.h"

using namespace needle;
using namespace needle::text;

namespace {

std::vector<int> iota_ids(int n, int start) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::string classes_str(const std::vector<uint8_t>& c) {
  std::string s;
  for (uint8_t x : c) s += static_cast<char>('0' + x);
  return s;
}

}  // namespace

TEST_CASE("prompt: encoder layout and truncation rules", "[prompt]") {
  auto q = iota_ids(10, 100), t = iota_ids(20, 1000);
  EncoderInput in = build_encoder_input(q, t);
  CHECK(in.ids.size() == 31);
  CHECK(in.ids[10] == kToolsId);
  CHECK(in.ids[0] == 100);
  CHECK(in.ids[30] == 1019);
  CHECK_FALSE(in.truncated());
  // The tools are cut to fill max_enc_len.
  in = build_encoder_input(q, iota_ids(2000, 1000));
  CHECK(in.ids.size() == 1024);
  CHECK(in.tools_kept == 1024 - 10 - 1);
  CHECK(in.truncated());
  // A long query keeps 1022 tokens, then <tools>, then one tools token.
  in = build_encoder_input(iota_ids(3000, 10), t);
  CHECK(in.query_kept == 1022);
  CHECK(in.ids.size() == 1024);
  CHECK(in.ids[1021] == 10 + 1021);
  CHECK(in.ids[1022] == kToolsId);
  CHECK(in.ids[1023] == 1000);
  CHECK(in.tools_kept == 1);
  // Exactly full: nothing truncated.
  in = build_encoder_input(iota_ids(1000, 10), iota_ids(23, 2000));
  CHECK(in.ids.size() == 1024);
  CHECK_FALSE(in.truncated());
  // A smaller max_enc_len (the tiny fixture model's 128, say).
  in = build_encoder_input(iota_ids(200, 10), t, 128);
  CHECK(in.ids.size() == 128);
  CHECK(in.query_kept == 126);
  CHECK(in.ids[126] == kToolsId);
  in = build_encoder_input(std::vector<int>{}, std::vector<int>{}, 8);
  CHECK(in.ids == std::vector<int>{kToolsId});
  CHECK(decoder_start() == std::vector<int>{kEosId});
}

TEST_CASE("prompt: answer text is compact with snake_cased names", "[prompt]") {
  CHECK(*answer_model_text(R"([{"name": "getWeather", "arguments": {"location": "S\u00e3o Paulo", "n": 1.50}}])") ==
        R"([{"name":"get_weather","arguments":{"location":"S\u00e3o Paulo","n":1.5}}])");
  CHECK(*answer_model_text("") == "[]");
  CHECK(*answer_model_text("[]") == "[]");
  CHECK(*answer_model_text("null") == "[]");
  CHECK_FALSE(answer_model_text("[{").is_ok());
}

TEST_CASE("prompt: answer character classes", "[prompt]") {
  std::string a = R"([{"name":"get_weather","arguments":{"city":"Paris","n":12,"tags":["a"]}}])";
  auto c = answer_char_classes(a);
  REQUIRE(c.size() == a.size());
  // [{"name":"get_weather","arguments":{"city":"Paris","n":12,"tags":["a"]}}]
  CHECK(classes_str(c) ==
        "0000000000"  // [{"name":"
        "11111111111"  // get_weather
        "0"            // "
        "0000000000000"  // ,"arguments":
        "00" "3333" "000" "22222" "0"  // {"city":"Paris"
        "00" "3" "00" "22"             // ,"n":12
        "00" "3333" "00" "22222" "00"  // ,"tags":["a"]}}
        "0");
  // A single call object, and non-JSON text (all base).
  auto one = answer_char_classes(R"({"name":"f","arguments":{"x":true}})");
  CHECK(classes_str(one) == "00000000010000000000000000300222200");
  CHECK(classes_str(answer_char_classes("[{\"name\":")) == "000000000");
  CHECK(classes_str(answer_char_classes("[]")) == "00");
}

TEST_CASE("prompt: token classes take the max over each token's bytes", "[prompt]") {
  std::string a = R"([{"name":"f","arguments":{"x":"ab"}}])";
  // Spans chosen by hand: "[{", "\"name\":\"", "f\",", ... ; an empty span takes the class of
  // the byte where it starts (byte pieces before the one that carries the character's span).
  std::vector<TokenSpan> spans = {{10, 0, 2}, {11, 2, 10}, {12, 10, 13}, {13, 13, 27}, {14, 27, 29},
                                  {15, 29, 32}, {16, 32, 32}, {17, 32, 33}, {18, 33, 37}, {19, 37, 37}};
  CHECK(classes_str(answer_token_classes(a, spans)) == "0010322200");
  std::vector<std::string> pieces = {" [{", "\"name\":\"", "f\",", "\"arguments\":{\"", "x\"", ":\"a", "b", "\"}}]", ""};
  CHECK(classes_str(answer_token_classes(a, pieces)) == "001032200");
  // Real spans: a character split into byte pieces gives every piece the character's class.
  auto tok = Tokenizer::from_file(NEEDLE_TEST_DATA "/tiny_tok.model");
  REQUIRE(tok.is_ok());
  std::string b = "[{\"name\":\"f\",\"arguments\":{\"x\":\"\xe6\x97\xa5\"}}]";
  auto real = tok->encode_with_spans(b);
  auto cls = answer_token_classes(b, real);
  size_t bytes = 0;
  for (size_t i = 0; i < real.size(); ++i)
    if (tok->kind(real[i].id) == PieceKind::Byte) {
      CHECK(cls[i] == 2);
      ++bytes;
    }
  CHECK(bytes == 3);
}

TEST_CASE("prompt: decoder example layout", "[prompt]") {
  auto tok = Tokenizer::from_file(NEEDLE_TEST_DATA "/tiny_tok.model");
  REQUIRE(tok.is_ok());
  std::string a = R"([{"name":"set_timer","arguments":{"minutes":73}}])";
  auto ex = build_decoder_example(*tok, a);
  REQUIRE(ex.is_ok());
  auto ids = tok->encode(a);
  REQUIRE(ex->input.size() == ids.size() + 2);
  CHECK(ex->input[0] == kEosId);
  CHECK(ex->input[1] == kToolCallId);
  CHECK(std::equal(ids.begin(), ids.end(), ex->input.begin() + 2));
  REQUIRE(ex->target.size() == ids.size() + 2);
  CHECK(ex->target[0] == kToolCallId);
  CHECK(ex->target.back() == kEosId);
  CHECK(std::equal(ids.begin(), ids.end(), ex->target.begin() + 1));
  REQUIRE(ex->target_class.size() == ex->target.size());
  CHECK(ex->target_class.front() == 0);
  CHECK(ex->target_class.back() == 0);
  // Every class shows up; the token holding "73" is a value.
  std::string cls = classes_str(ex->target_class);
  for (char k : {'1', '2', '3'}) CHECK(cls.find(k) != std::string::npos);
  // Too long for the decoder: dropped, as in the reference.
  CHECK_FALSE(build_decoder_example(*tok, a, ids.size() + 2).is_ok());
  CHECK(build_decoder_example(*tok, a, ids.size() + 3).is_ok());
  auto empty = build_decoder_example(*tok, "[]");
  REQUIRE(empty.is_ok());
  CHECK(empty->target.size() == tok->encode("[]").size() + 2);
}

TEST_CASE("prompt: e2e goldens: encoder input and answer token counts", "[prompt]") {
  const std::string tok_path = NEEDLE_SHARED_FIXTURES "/e2e/e2e_tok.model";
  const std::string goldens = NEEDLE_SHARED_FIXTURES "/e2e/goldens.jsonl";
  if (!std::filesystem::exists(tok_path) || !std::filesystem::exists(goldens)) {
    WARN("shared e2e fixtures absent: skipped");
    return;
  }
  auto tok = Tokenizer::from_file(tok_path);
  REQUIRE(tok.is_ok());
  std::ifstream f(goldens);
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    auto g = json::parse(line);
    REQUIRE(g.is_ok());
    const std::string& query = g->find("query")->text;
    auto tools = parse_tools(g->find("tools")->text);
    REQUIRE(tools.is_ok());
    std::string tools_text = tools->model_json();
    CHECK(tools_text.find("getWeather") == std::string::npos);
    EncoderInput in = build_encoder_input(*tok, query, *tools);
    auto q = tok->encode(query), t = tok->encode(tools_text);
    CHECK_FALSE(in.truncated());
    REQUIRE(in.ids.size() == q.size() + 1 + t.size());
    CHECK(std::equal(q.begin(), q.end(), in.ids.begin()));
    CHECK(in.ids[q.size()] == kToolsId);
    CHECK(std::equal(t.begin(), t.end(), in.ids.begin() + static_cast<ptrdiff_t>(q.size()) + 1));
    CHECK(std::count(in.ids.begin(), in.ids.end(), kToolsId) == 1);
    // A tight budget cuts the tools, never the <tools> separator.
    EncoderInput cut = build_encoder_input(*tok, query, *tools, q.size() + 5);
    CHECK(cut.ids.size() == q.size() + 5);
    CHECK(cut.tools_kept == 4);
    CHECK(cut.truncated());
    // The reference's teacher-forced loss ran over [<tool_call>] + answer + [EOS] with the
    // answer snake_cased and compacted: our answer text gives the same token count.
    auto answer = answer_model_text(g->find("answers")->text);
    REQUIRE(answer.is_ok());
    auto ex = build_decoder_example(*tok, *answer);
    REQUIRE(ex.is_ok());
    CHECK(ex->target.size() == std::stoul(g->find("loss_tokens")->text));
    // The model's own output (constrained, f32) after <tool_call> is exactly that answer text
    // wherever the reference run got the example right.
    std::vector<int> gen;
    for (const auto& x : g->find("f32_constrained_ids")->array) gen.push_back(std::stoi(x.text));
    auto text = tok->decode(std::span<const int>(gen).subspan(1));
    REQUIRE(text.is_ok());
    auto out = json::parse(*text);
    REQUIRE(out.is_ok());
    auto printed = json::parse(g->find("f32_constrained")->text);
    REQUIRE(printed.is_ok());
    // Restoring caller names gives what the original generate() printed.
    CHECK(json::equal(restore_names(*out, *tools), *printed));
    ++n;
  }
  CHECK(n == 144);
}

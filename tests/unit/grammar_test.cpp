// Schema grammar: targeted byte-level cases, validate_output, and the property test
// (random tool sets x random token streams sampled only from allowed tokens).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include <fmt/format.h>

#include "decode/constraint.h"
#include "decode/constraint_text.h"
#include "decode/grammar.h"

using namespace needle::decode;

namespace {

// ---- Vocabularies ------------------------------------------------------------------------

// The e2e tokenizer's vocabulary (BPE 2000, byte fallback), as the decoder sees it.
TokenVocab e2e_vocab() {
  auto tok = needle::text::Tokenizer::from_file(std::string(NEEDLE_SHARED_FIXTURES) +
                                                "/e2e/e2e_tok.model");
  REQUIRE(tok);
  return vocab_from_tokenizer(*tok);
}

// A synthetic vocabulary of `size` ids: specials 0..5, 256 byte tokens, JSON fragments,
// multi-byte UTF-8 pieces, then random words (with and without a leading space).
TokenVocab synthetic_vocab(size_t size, uint32_t seed) {
  TokenVocab v;
  v.bytes.assign(6, "");
  v.eos_ids = {1};
  v.lead_ids = {4};
  for (int b = 0; b < 256; ++b) v.bytes.push_back(std::string(1, static_cast<char>(b)));
  const char* frags[] = {
      "[{\"", " [{\"", " []", "[]", "{\"", "\":\"", "\",\"", "\":{\"", "\"}},{\"", "}}]", "\"}}]",
      "}}", "}}}", "\":", ",\"", "\":[", "\":[\"", "\"]", "[\"", "\",", "\"},{\"", "},{\"",
      "name", "\":\"", "arguments", "\",\"arguments\":{", "\",\"arguments\":{\"", "true", "false",
      "null", "true}", "false,\"", "0", "1", "12", "2024", "-1", "-0.", ".5", "e+", "E-", "1e",
      "3.14", "00", "\\u00", "\\u", "\\n", "\\\"", "\\\\", "\\/", "\\ud83d", "\\ude00", "é", "ö",
      "日本", "語", "😀", "Привет", " é", "a\"", "\"a", "x\",\"", "]}", "]}]", "\"]}", "\":1",
      "\":0,\"", "\":-", "\":true", "\":null}", "\":{}", "{}", "[[", "]]", "\t", "\n", " ",
      "  ", "\"\"", "\",\"\":\"", "\\t\"", "\xC3", "\xE6\x97"};
  for (const char* f : frags) v.bytes.push_back(f);
  std::mt19937 rng(seed);
  const std::string letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
  while (v.bytes.size() < size) {
    std::string w;
    if (rng() % 3 == 0) w = " ";
    const size_t n = 2 + rng() % 7;
    for (size_t i = 0; i < n; ++i) w.push_back(letters[rng() % letters.size()]);
    if (rng() % 10 == 0) w += "\"";
    if (rng() % 20 == 0) w += "\":\"";
    v.bytes.push_back(w);
  }
  return v;
}

// ---- Random tools ------------------------------------------------------------------------

std::string random_text(std::mt19937& rng, size_t min_len, size_t max_len, bool exotic) {
  static const char* pool[] = {"a", "b", "c", "x", "y", "z", "_", "1", "n", "m", "e", "t",
                               "é", "ö", "日", "本", "😀", "ß", "Ж", " ", ".", "-"};
  static const char* weird[] = {"\"", "\\", "\n", "\t", "/", "\x01", "\x7f"};
  const size_t n = min_len + rng() % (max_len - min_len + 1);
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (exotic && rng() % 12 == 0)
      s += weird[rng() % (sizeof(weird) / sizeof(*weird))];
    else {
      const size_t range = rng() % 3 == 0 ? sizeof(pool) / sizeof(*pool) : 12;  // sequenced
      s += pool[rng() % range];
    }
  }
  return s;
}

ArgSchema random_schema(std::mt19937& rng, int depth) {
  ArgSchema s;
  const int k = static_cast<int>(rng() % (depth < 2 ? 10 : 6));
  switch (k) {
    case 0: s.type = ArgType::String; break;
    case 1: s.type = ArgType::Number; break;
    case 2: s.type = ArgType::Integer; break;
    case 3: s.type = ArgType::Boolean; break;
    case 4: {  // enum
      s.type = ArgType::String;
      const size_t n = 1 + rng() % 4;
      for (size_t i = 0; i < n; ++i) {
        if (rng() % 4 == 0) {
          const char* others[] = {"1", "12", "-3.5", "true", "null", "0"};
          s.enum_values.push_back({false, others[rng() % 6]});
        } else {
          s.enum_values.push_back({true, random_text(rng, 0, 6, true)});
        }
      }
      break;
    }
    case 5: s.type = ArgType::Any; break;
    case 6:
    case 7: {
      s.type = ArgType::Array;
      if (rng() % 4 != 0) s.items.push_back(random_schema(rng, depth + 1));
      break;
    }
    default: {
      s.type = ArgType::Object;
      const size_t n = rng() % 4;  // 0: free-form
      std::set<std::string> names;
      for (size_t i = 0; i < n; ++i) {
        ArgProp p;
        p.name = random_text(rng, 1, 5, true);
        if (!names.insert(p.name).second) continue;
        p.schema = random_schema(rng, depth + 1);
        p.required = rng() % 2;
        s.properties.push_back(std::move(p));
      }
    }
  }
  s.nullable = rng() % 8 == 0;
  return s;
}

std::vector<ToolSpec> random_tools(std::mt19937& rng, size_t max_tools) {
  std::vector<ToolSpec> tools;
  const size_t n = 1 + rng() % max_tools;
  std::set<std::string> names;
  for (size_t t = 0; t < n; ++t) {
    ToolSpec tool;
    tool.name = random_text(rng, 1, 10, rng() % 4 == 0);
    if (!names.insert(tool.name).second) continue;
    const size_t na = rng() % 6;
    std::set<std::string> keys;
    for (size_t a = 0; a < na; ++a) {
      ArgProp p;
      p.name = random_text(rng, 1, 8, rng() % 5 == 0);
      if (!keys.insert(p.name).second) continue;
      p.schema = random_schema(rng, 0);
      p.required = rng() % 2;
      tool.args.push_back(std::move(p));
    }
    tools.push_back(std::move(tool));
  }
  return tools;
}

std::vector<ToolSpec> weather_tools() {
  ToolSpec w;
  w.name = "get_weather";
  ArgProp loc{"location", {}, true};
  loc.schema.type = ArgType::String;
  ArgProp unit{"unit", {}, false};
  unit.schema.type = ArgType::String;
  unit.schema.enum_values = {{true, "celsius"}, {true, "fahrenheit"}, {true, "cé"}};
  ArgProp days{"days", {}, false};
  days.schema.type = ArgType::Integer;
  w.args = {loc, unit, days};
  ToolSpec t;
  t.name = "set_timer";
  ArgProp minutes{"minutes", {}, true};
  minutes.schema.type = ArgType::Number;
  ArgProp opts{"opts", {}, false};
  opts.schema.type = ArgType::Object;
  ArgProp loud{"loud", {}, true};
  loud.schema.type = ArgType::Boolean;
  ArgProp tags{"tags", {}, false};
  tags.schema.type = ArgType::Array;
  tags.schema.items.push_back(ArgSchema{ArgType::String, false, {}, {}, {}});
  opts.schema.properties = {loud, tags};
  ArgProp extra{"extra", {}, false};
  extra.schema.type = ArgType::Object;  // free-form
  t.args = {minutes, opts, extra};
  ToolSpec n;
  n.name = "noop";
  return {w, t, n};
}

SchemaMatcher matcher(const std::vector<ToolSpec>& tools, const SchemaOptions& opt = {}) {
  auto g = compile_grammar(tools, opt);
  REQUIRE(g);
  return SchemaMatcher(*g);
}

bool accepts(const std::vector<ToolSpec>& tools, std::string_view text) {
  auto m = matcher(tools);
  return m.feed(text) && m.complete();
}

}  // namespace

TEST_CASE("schema grammar: basic calls and the empty list", "[grammar]") {
  const auto tools = weather_tools();
  CHECK(accepts(tools, "[]"));
  CHECK(accepts(tools, " []"));
  CHECK_FALSE(accepts(tools, "  []"));
  CHECK(accepts(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"Paris\"}}]"));
  CHECK(accepts(tools, "[{\"name\":\"noop\",\"arguments\":{}},{\"name\":\"noop\",\"arguments\":{}}]"));
  CHECK(accepts(tools,
                "[{\"name\":\"set_timer\",\"arguments\":{\"minutes\":-1.5e+3,\"opts\":{\"tags\":"
                "[\"a\",\"b\"],\"loud\":true},\"extra\":{\"k\":[1,{\"z\":null}],\"k\":\"dup ok\"}}}]"));
  // No whitespace outside strings, no unknown tools, no trailing text.
  CHECK_FALSE(accepts(tools, "[ ]"));
  CHECK_FALSE(accepts(tools, "[{\"name\": \"noop\",\"arguments\":{}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"nop\",\"arguments\":{}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"noop\",\"arguments\":{\"x\":1}}]"));
  auto m = matcher(tools);
  REQUIRE(m.feed("[]"));
  CHECK(m.complete());
  CHECK(m.allowed_bytes().empty());
  // With no tools only [] is possible.
  auto e = matcher({});
  REQUIRE(e.feed("["));
  CHECK(e.allowed_bytes() == "]");
}

TEST_CASE("schema grammar: keys, duplicates and required arguments", "[grammar]") {
  const auto tools = weather_tools();
  auto m = matcher(tools);
  REQUIRE(m.feed("[{\"name\":\"get_weather\",\"arguments\":{"));
  CHECK(m.allowed_bytes() == "\"");  // location is required: no '}' yet
  REQUIRE(m.feed("\"unit\":\"celsius\""));
  CHECK(m.allowed_bytes() == ",");  // still missing location
  REQUIRE(m.feed(",\""));
  // unit is used: only l(ocation) and d(ays) may start a key.
  CHECK(m.allowed_bytes() == "dl");
  CHECK_FALSE(accepts(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"a\","
                             "\"location\":\"b\"}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"unit\":\"celsius\"}}]"));
  auto all = matcher(tools);
  REQUIRE(all.feed("[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"a\",\"unit\":"
                   "\"celsius\",\"days\":3"));
  CHECK(all.allowed_bytes() == "0123456789}");  // every key used: no ','
  // Nested typed object: loud required, tags optional.
  auto n = matcher(tools);
  REQUIRE(n.feed("[{\"name\":\"set_timer\",\"arguments\":{\"minutes\":5,\"opts\":{"));
  CHECK(n.allowed_bytes() == "\"");
  REQUIRE(n.feed("\"loud\":false"));
  CHECK(n.allowed_bytes() == ",}");
}

TEST_CASE("schema grammar: enums, numbers, strings and escapes", "[grammar]") {
  const auto tools = weather_tools();
  const std::string pre = "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"x\",\"unit\":";
  CHECK(accepts(tools, pre + "\"fahrenheit\"}}]"));
  CHECK(accepts(tools, pre + "\"c\xC3\xA9\"}}]"));   // raw UTF-8
  CHECK(accepts(tools, pre + "\"c\\u00e9\"}}]"));    // escaped as ensure_ascii writes it
  CHECK_FALSE(accepts(tools, pre + "\"kelvin\"}}]"));
  CHECK_FALSE(accepts(tools, pre + "\"celsiu\"}}]"));
  CHECK_FALSE(accepts(tools, pre + "null}}]"));
  auto m = matcher(tools);
  REQUIRE(m.feed(pre + "\"c"));
  CHECK(m.allowed_bytes() == "\\e\xC3");
  // Integers: no fraction or exponent; digits bounded.
  const std::string days = "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"x\",\"days\":";
  CHECK(accepts(tools, days + "-0}}]"));
  CHECK_FALSE(accepts(tools, days + "1.0}}]"));
  CHECK_FALSE(accepts(tools, days + "01}}]"));
  CHECK_FALSE(accepts(tools, days + "-}}]"));
  CHECK_FALSE(accepts(tools, days + std::string(25, '9') + "}}]"));
  CHECK(accepts(tools, days + std::string(24, '9') + "}}]"));
  // Strings: escapes, surrogates, UTF-8 split across tokens (byte by byte here).
  const std::string loc = "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"";
  CHECK(accepts(tools, loc + "a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\xF0\x9F\x98\x80\"}}]"));
  CHECK_FALSE(accepts(tools, loc + "\\ude00\"}}]"));        // lone low surrogate
  CHECK_FALSE(accepts(tools, loc + "\\ud83d\"}}]"));        // high without low
  CHECK_FALSE(accepts(tools, loc + "\\ud83d\\u0041\"}}]"));
  CHECK_FALSE(accepts(tools, loc + "\xC3\"}}]"));           // truncated UTF-8
  CHECK_FALSE(accepts(tools, loc + "\xED\xA0\x80\"}}]"));   // UTF-8 surrogate
  CHECK_FALSE(accepts(tools, loc + "\xC0\xAF\"}}]"));       // overlong
  CHECK_FALSE(accepts(tools, loc + "a\nb\"}}]"));           // raw control
  auto s = matcher(tools);
  REQUIRE(s.feed(loc + "\xE0"));
  const std::string ab = s.allowed_bytes();
  CHECK(ab.size() == 0x20);
  CHECK(static_cast<unsigned char>(ab.front()) == 0xA0);
}

TEST_CASE("schema grammar: names and keys with characters that need escapes", "[grammar]") {
  ToolSpec t;
  t.name = "ta\"b\\日";
  ArgProp p{"k\n\x01", {}, true};
  p.schema.type = ArgType::Boolean;
  t.args = {p};
  const std::vector<ToolSpec> tools = {t};
  CHECK(accepts(tools, "[{\"name\":\"ta\\\"b\\\\\\u65e5\",\"arguments\":{\"k\\n\\u0001\":true}}]"));
  CHECK(accepts(tools, "[{\"name\":\"ta\\\"b\\\\日\",\"arguments\":{\"k\\n\\u0001\":false}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"ta\"b\",\"arguments\":{\"k\\n\\u0001\":true}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"ta\\\"b\\\\日\",\"arguments\":{\"k\\u000a\\u0001\":true}}]"));
}

TEST_CASE("schema grammar: nullable, any and arrays", "[grammar]") {
  ToolSpec t;
  t.name = "f";
  ArgProp a{"a", {}, false};
  a.schema.type = ArgType::String;
  a.schema.nullable = true;
  ArgProp b{"b", {}, false};
  b.schema.type = ArgType::Any;
  ArgProp c{"c", {}, false};
  c.schema.type = ArgType::Array;
  ArgSchema item;
  item.type = ArgType::Integer;
  item.enum_values = {{false, "1"}, {false, "12"}};
  c.schema.items = {item};
  t.args = {a, b, c};
  const std::vector<ToolSpec> tools = {t};
  CHECK(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"a\":null,\"b\":[{},[],\"s\",-2,true]}}]"));
  CHECK(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"c\":[1,12,1],\"b\":null}}]"));
  CHECK(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"c\":[]}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"c\":[2]}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"c\":[123]}}]"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"f\",\"arguments\":{\"c\":null}}]"));
}

TEST_CASE("schema grammar: objects with more than 64 keys", "[grammar]") {
  ToolSpec t;
  t.name = "many";
  for (int i = 0; i < 130; ++i) {
    ArgProp p{fmt::format("k{}", i), {}, i == 3 || i == 127};
    p.schema.type = ArgType::Integer;
    t.args.push_back(p);
  }
  const std::vector<ToolSpec> tools = {t};
  auto m = matcher(tools);
  REQUIRE(m.feed("[{\"name\":\"many\",\"arguments\":{\"k127\":1,\"k3\":2"));
  CHECK(m.allowed_bytes() == ",0123456789}");
  auto d = matcher(tools);
  REQUIRE(d.feed("[{\"name\":\"many\",\"arguments\":{\"k127\":1,\"k12"));
  CHECK(d.allowed_bytes() == "\"012345689");  // k12, k120..k129 but not the used k127
  CHECK_FALSE(d.feed("7"));
  CHECK_FALSE(accepts(tools, "[{\"name\":\"many\",\"arguments\":{\"k3\":1}}]"));
  std::string all = "[{\"name\":\"many\",\"arguments\":{";
  for (int i = 129; i >= 0; --i) all += fmt::format("\"k{}\":{}{}", i, i, i ? "," : "}}]");
  CHECK(accepts(tools, all));
  CHECK(validate_output(all, tools));
}

TEST_CASE("validate_output: conformance checks", "[grammar]") {
  const auto tools = weather_tools();
  CHECK(validate_output("[]", tools));
  CHECK(validate_output(" [ ]\n", tools));
  CHECK(validate_output("[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"\\u00e9\","
                        "\"unit\":\"c\\u00e9\"}}]",
                        tools));
  CHECK_FALSE(validate_output("", tools));
  CHECK_FALSE(validate_output("{}", tools));
  CHECK_FALSE(validate_output("[{\"name\":\"get_weather\",\"arguments\":{}}]", tools));
  CHECK_FALSE(validate_output("[{\"name\":\"zzz\",\"arguments\":{}}]", tools));
  CHECK_FALSE(validate_output("[{\"name\":\"noop\"}]", tools));
  CHECK_FALSE(validate_output("[{\"name\":\"noop\",\"arguments\":{},\"x\":1}]", tools));
  CHECK_FALSE(validate_output(
      "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"a\",\"location\":\"a\"}}]", tools));
  CHECK_FALSE(validate_output(
      "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"a\",\"days\":1.5}}]", tools));
  CHECK_FALSE(validate_output(
      "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"a\",\"unit\":\"k\"}}]", tools));
  CHECK_FALSE(validate_output("[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"\\udc00\"}}]",
                              tools));
  CHECK_FALSE(validate_output("[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"\xff\"}}]",
                              tools));
  CHECK_FALSE(validate_output("[] x", tools));
}

TEST_CASE("schema constraint: token masks on the e2e vocabulary", "[grammar]") {
  auto index = TokenIndex::build(e2e_vocab());
  REQUIRE(index);
  REQUIRE((*index)->size() == 2000);
  auto c = make_schema_constraint(*index, weather_tools());
  REQUIRE(c);
  Constraint& k = **c;
  std::vector<uint8_t> mask;
  REQUIRE(k.allowed(mask) > 0);
  CHECK(mask[4]);   // <tool_call> first
  CHECK(!mask[1]);  // no EOS yet
  REQUIRE(k.advance(4));
  k.allowed(mask);
  CHECK(!mask[4]);
  // The golden answers' token pieces: "▁[{\"" is allowed after <tool_call>.
  const auto& idx = **index;
  int open = -1;
  for (size_t i = 0; i < idx.size(); ++i)
    if (idx.bytes(static_cast<int>(i)) == " [{\"") open = static_cast<int>(i);
  REQUIRE(open >= 0);
  CHECK(mask[static_cast<size_t>(open)]);
  CHECK_FALSE(k.advance(1));  // EOS too early: an error, state unchanged
  REQUIRE(k.advance(open));
  CHECK_FALSE(k.done());
  // Drive "name":"set_timer","arguments":{"minutes":73}}] byte by byte through tokens.
  const std::string rest = "name\":\"set_timer\",\"arguments\":{\"minutes\":73}}]";
  for (char ch : rest) {
    int id = -1;
    for (size_t i = 0; i < idx.size() && id < 0; ++i)
      if (idx.bytes(static_cast<int>(i)) == std::string(1, ch)) id = static_cast<int>(i);
    REQUIRE(id >= 0);
    k.allowed(mask);
    REQUIRE(mask[static_cast<size_t>(id)]);
    REQUIRE(k.advance(id));
  }
  CHECK(k.done());
  REQUIRE(k.allowed(mask) == 1);
  CHECK(mask[1]);
  REQUIRE(k.advance(1));
  // apply(): disallowed logits become -inf.
  k.reset();
  std::vector<float> logits(idx.size(), 0.f);
  k.apply(logits.data(), logits.size());
  CHECK(logits[4] == 0.f);
  CHECK(std::isinf(logits[1]));
}

TEST_CASE("schema constraint: vocabulary requirements", "[grammar]") {
  TokenVocab v;
  v.bytes = {"", "", "[", "]", "{"};
  auto idx = TokenIndex::build(v);
  REQUIRE(idx);
  auto c = make_schema_constraint(*idx, {});
  CHECK_FALSE(c);
}

namespace {

struct WalkStats {
  size_t streams = 0, completed = 0, steps = 0;
  double mask_seconds = 0;
  std::vector<double> step_seconds;
};

// Samples one stream: random logits (structural closers favoured so that many streams finish),
// argmax over the allowed ids. Checks the mask against advance() both ways.
void random_stream(Constraint& c, const TokenIndex& idx, const std::vector<ToolSpec>& tools,
                   std::mt19937& rng, size_t max_tokens, WalkStats& st, int budget = -1) {
  c.reset();
  c.set_budget(budget);
  std::vector<uint8_t> mask;
  std::string text;
  std::uniform_real_distribution<float> u(0.f, 1.f);
  ++st.streams;
  // Some streams favour closers strongly (short outputs), others barely (long, deep ones).
  const float closer_bonus = (rng() % 3 == 0) ? 0.15f : 0.7f;
  for (size_t step = 0; step < max_tokens; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n = c.allowed(mask);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.mask_seconds += dt;
    st.step_seconds.push_back(dt);
    ++st.steps;
    INFO("text so far: " << text);
    REQUIRE(n > 0);
    int best = -1;
    float best_v = -1;
    for (size_t i = 0; i < mask.size(); ++i) {
      if (!mask[i]) continue;
      const std::string& b = idx.bytes(static_cast<int>(i));
      float v = u(rng);
      if (idx.is_eos(static_cast<int>(i))) v += 2.f;
      if (b.find_first_of("\"}]") != std::string::npos) v += closer_bonus;
      if (b.size() == 1 && static_cast<unsigned char>(b[0]) >= 0x80) v += 0.3f;  // byte tokens
      if (v > best_v) best_v = v, best = static_cast<int>(i);
    }
    // A few disallowed ids must be refused (and leave the state unchanged).
    for (int k = 0; k < 3; ++k) {
      const auto id = static_cast<size_t>(rng() % mask.size());
      if (!mask[id]) REQUIRE_FALSE(c.advance(static_cast<int>(id)));
    }
    auto s = c.advance(best);
    INFO("text so far: " << text << " token " << best << " '" << idx.bytes(best) << "': "
                         << s.message());
    REQUIRE(s);
    if (idx.is_eos(best)) {
      ++st.completed;
      INFO("completed output: " << text);
      auto ok = validate_output(text, tools);
      INFO(ok.message());
      REQUIRE(ok);
      // Compact: at most one leading space, no whitespace outside strings (checked by the
      // grammar's own tests; here: the text starts with '[' or " [").
      REQUIRE((text.rfind("[", 0) == 0 || text.rfind(" [", 0) == 0));
      return;
    }
    text += idx.bytes(best);
  }
}

}  // namespace

TEST_CASE("schema constraint: property test over random tool sets and token streams",
          "[grammar][property]") {
  auto e2e = TokenIndex::build(e2e_vocab());
  REQUIRE(e2e);
  auto synth = TokenIndex::build(synthetic_vocab(3000, 7));
  REQUIRE(synth);
  // A vocabulary without single-byte tokens for UTF-8 continuation bytes (but with pieces that
  // end inside a character): tokens must not end mid-character there.
  TokenVocab limited_vocab = synthetic_vocab(1500, 8);
  for (int b = 0x80; b < 0xC0; ++b) limited_vocab.bytes[6 + static_cast<size_t>(b)] = "";
  auto limited = TokenIndex::build(limited_vocab);
  REQUIRE(limited);
  std::mt19937 rng(12345);
  WalkStats st;
  const size_t n_sets = 500;
  for (size_t set = 0; set < n_sets; ++set) {
    const auto tools = random_tools(rng, 50);
    const auto& index = set % 2 ? *e2e : set % 6 == 0 ? *limited : *synth;
    auto c = make_schema_constraint(index, tools);
    REQUIRE(c);
    for (int s = 0; s < 2; ++s) random_stream(**c, *index, tools, rng, 300, st);
  }
  std::printf("schema property test: %zu streams, %zu completed and valid, %zu steps, %.1f us/mask\n",
              st.streams, st.completed, st.steps, 1e6 * st.mask_seconds / static_cast<double>(st.steps));
  CHECK(st.completed * 2 > st.streams);
}

TEST_CASE("schema constraint: mask time per step, 50 tools, vocab 8192", "[.bench]") {
  auto index = TokenIndex::build(synthetic_vocab(8192, 3));
  REQUIRE(index);
  for (int budget : {-1, 511}) {  // without and with the token budget (same streams)
    std::mt19937 rng(99);
    WalkStats st;
    for (int set = 0; set < 20; ++set) {
      std::vector<ToolSpec> tools;
      while (tools.size() < 50) {
        auto more = random_tools(rng, 50);
        for (auto& t : more)
          if (tools.size() < 50) tools.push_back(std::move(t));
      }
      auto c = make_schema_constraint(*index, tools);
      REQUIRE(c);
      random_stream(**c, **index, tools, rng, 400, st, budget);
    }
    auto& v = st.step_seconds;
    std::sort(v.begin(), v.end());
    std::printf("schema mask (vocab 8192, 50 tools, budget %d, %zu steps): mean %.1f us, "
                "p50 %.1f us, p99 %.1f us, max %.1f us\n",
                budget, st.steps, 1e6 * st.mask_seconds / static_cast<double>(st.steps),
                1e6 * v[v.size() / 2], 1e6 * v[v.size() * 99 / 100], 1e6 * v.back());
  }
}

// ---- Shortest completions and the token budget ------------------------------------------

namespace {

std::string completion_after(const std::vector<ToolSpec>& tools, std::string_view prefix) {
  auto m = matcher(tools);
  REQUIRE(m.feed(prefix));
  const std::string c = m.shortest_completion();
  CHECK(m.shortest_completion_length() == c.size());
  auto done = m;
  REQUIRE(done.feed(c));
  CHECK(done.complete());
  return c;
}

// Bytes a random prefix walk prefers: the structural ones (so that strings, numbers and
// literals get closed and the walk reaches deep states), else any allowed byte.
int pick_byte(const std::string& allowed, std::mt19937& rng) {
  static const std::string structural = "\"]}:,{[0123456789-.eE+tfn\\u";
  if (rng() % 2 == 0) {
    std::string s;
    for (char ch : allowed)
      if (structural.find(ch) != std::string::npos) s.push_back(ch);
    if (!s.empty()) return static_cast<unsigned char>(s[rng() % s.size()]);
  }
  return static_cast<unsigned char>(allowed[rng() % allowed.size()]);
}

// No complete state is reachable from `m` in fewer than `n` bytes (breadth first over
// distinct automaton states).
bool no_shorter_completion(const SchemaMatcher& m, size_t n) {
  std::vector<SchemaMatcher> level = {m};
  std::set<std::string> seen = {m.state_key()};
  for (size_t d = 0; d < n; ++d) {
    for (const auto& s : level)
      if (s.complete()) return false;
    std::vector<SchemaMatcher> next;
    for (const auto& s : level)
      for (char b : s.allowed_bytes()) {
        SchemaMatcher t = s;
        REQUIRE(t.feed(std::string_view(&b, 1)));
        if (seen.insert(t.state_key()).second) next.push_back(std::move(t));
      }
    level = std::move(next);
    if (level.size() > 20000) return true;  // too wide to finish: inconclusive, not a failure
  }
  return true;
}

}  // namespace

TEST_CASE("shortest completion: targeted states", "[grammar][completion]") {
  const auto tools = weather_tools();
  CHECK(completion_after(tools, "") == "[]");
  CHECK(completion_after(tools, " ") == "[]");
  CHECK(completion_after(tools, "[") == "]");
  CHECK(completion_after(tools, "[]").empty());
  // The cheapest call: noop has no arguments.
  CHECK(completion_after(tools, "[{") == "\"name\":\"noop\",\"arguments\":{}}]");
  CHECK(completion_after(tools, "[{\"name\":\"noop\",\"arguments\":{}},") ==
        "{\"name\":\"noop\",\"arguments\":{}}]");
  // A name already started: the cheapest tool it can still become.
  CHECK(completion_after(tools, "[{\"name\":\"s") == "et_timer\",\"arguments\":{\"minutes\":0}}]");
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"argu") ==
        "ments\":{\"location\":\"\"}}]");
  // Required keys with their shortest values; optional ones are left out.
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"arguments\":{") ==
        "\"location\":\"\"}}]");
  // An enum: the shortest member ("cé", raw UTF-8), then the missing required key.
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"unit\":\"c") ==
        "\xC3\xA9\",\"location\":\"\"}}]");
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"unit\":\"c\\u") ==
        "00e9\",\"location\":\"\"}}]");
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"x\",") ==
        "\"days\":0}}]");
  CHECK(completion_after(tools, "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"x\",\"u") ==
        "nit\":\"c\xC3\xA9\"}}]");
  // Nested required keys; numbers, escapes, surrogates and UTF-8 inside strings.
  const std::string timer = "[{\"name\":\"set_timer\",\"arguments\":{\"minutes\":";
  CHECK(completion_after(tools, timer) == "0}}]");
  CHECK(completion_after(tools, timer + "-") == "0}}]");
  CHECK(completion_after(tools, timer + "1.") == "0}}]");
  CHECK(completion_after(tools, timer + "1e") == "0}}]");
  CHECK(completion_after(tools, timer + "1e+") == "0}}]");
  CHECK(completion_after(tools, timer + "12") == "}}]");
  CHECK(completion_after(tools, timer + "1,\"opts\":") == "{\"loud\":true}}}]");
  CHECK(completion_after(tools, timer + "1,\"opts\":{\"tags\":[\"a\",") == "\"\"],\"loud\":true}}}]");
  CHECK(completion_after(tools, timer + "1,\"extra\":{\"k\":[") == "]}}}]");
  CHECK(completion_after(tools, timer + "1,\"extra\":{\"k\":[{\"") == "\":0}]}}}]");
  CHECK(completion_after(tools, timer + "1,\"extra\":{\"k\":[t") == "rue]}}}]");
  const std::string loc = "[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"";
  CHECK(completion_after(tools, loc + "ab") == "\"}}]");
  CHECK(completion_after(tools, loc + "\\") == "n\"}}]");
  CHECK(completion_after(tools, loc + "\\u1") == "000\"}}]");
  CHECK(completion_after(tools, loc + "\\ud8") == "00\\udc00\"}}]");
  CHECK(completion_after(tools, loc + "\\ud83d\\") == "udc00\"}}]");
  CHECK(completion_after(tools, loc + "\xE0") == "\xA0\x80\"}}]");
  CHECK(completion_after(tools, loc + "\xF4") == "\x80\x80\x80\"}}]");
  // Nullable: null when shorter than the type's shortest value.
  ToolSpec t;
  t.name = "f";
  ArgProp o{"o", {}, true};
  o.schema.type = ArgType::Object;
  o.schema.nullable = true;
  ArgProp inner{"inner", {}, true};
  inner.schema.type = ArgType::String;
  o.schema.properties = {inner};
  ArgProp b{"b", {}, true};
  b.schema.type = ArgType::Boolean;
  b.schema.nullable = true;
  ArgProp e{"e", {}, true};
  e.schema.type = ArgType::Integer;
  e.schema.enum_values = {{false, "100"}, {false, "20"}};
  t.args = {o, b, e};
  CHECK(completion_after({t}, "[{") == "\"name\":\"f\",\"arguments\":{\"o\":null,\"b\":true,\"e\":20}}]");
  CHECK(completion_after({t}, "[{\"name\":\"f\",\"arguments\":{\"o\":{") == "\"inner\":\"\"},\"b\":true,\"e\":20}}]");
  // Many keys: the cheapest unused one the open key can still become.
  ToolSpec many;
  many.name = "many";
  for (int i = 0; i < 130; ++i) {
    ArgProp p{fmt::format("k{}", i), {}, i == 3 || i == 127};
    p.schema.type = ArgType::Integer;
    many.args.push_back(p);
  }
  CHECK(completion_after({many}, "[{\"name\":\"many\",\"arguments\":{\"k127\":1,\"k12") ==
        "\":0,\"k3\":0}}]");
  CHECK(completion_after({many}, "[{\"name\":\"many\",\"arguments\":{\"k12\":1,\"k12") ==
        "7\":0,\"k3\":0}}]");
  // No tools: only [].
  CHECK(completion_after({}, "[") == "]");
}

TEST_CASE("shortest completion: random states of random schemas", "[grammar][completion]") {
  std::mt19937 rng(2024);
  size_t states = 0, searched = 0;
  for (int set = 0; set < 300; ++set) {
    const auto tools = random_tools(rng, 8);
    auto g = compile_grammar(tools);
    REQUIRE(g);
    for (int walk = 0; walk < 6; ++walk) {
      SchemaMatcher m(*g);
      std::string prefix;
      const size_t len = rng() % 160;
      for (size_t i = 0; i < len; ++i) {
        const std::string allowed = m.allowed_bytes();
        if (allowed.empty()) break;
        const char b = static_cast<char>(pick_byte(allowed, rng));
        REQUIRE(m.feed(std::string_view(&b, 1)));
        prefix.push_back(b);
      }
      ++states;
      const std::string c = m.shortest_completion();
      INFO("prefix: " << prefix << "\ncompletion: " << c);
      REQUIRE(m.shortest_completion_length() == c.size());
      // Along the completion the shortest length drops by exactly one per byte: each byte is
      // on a shortest path (what the budgeted constraint relies on).
      SchemaMatcher f = m;
      for (size_t i = 0; i < c.size(); ++i) {
        REQUIRE(f.feed(std::string_view(&c[i], 1)));
        REQUIRE(f.shortest_completion_length() == c.size() - i - 1);
      }
      REQUIRE(f.complete());
      auto ok = validate_output(prefix + c, tools);
      INFO(ok.message());
      REQUIRE(ok);
      // Nothing shorter exists (exhaustive for short completions).
      if (c.size() <= 7 && walk % 2 == 0) {
        ++searched;
        REQUIRE(no_shorter_completion(m, c.size()));
      }
    }
  }
  std::printf("shortest completion: %zu random states, %zu searched exhaustively\n", states, searched);
}

namespace {

// An adversarial "model": prefers letters and digits (never closes a string or number by
// choice), opening brackets and commas, long tokens; EOS the least. Returns the argmax over
// the constraint's allowed ids.
int adversarial_pick(Constraint& c, const std::vector<float>& score) {
  std::vector<float> logits = score;
  c.apply(logits.data(), logits.size());
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<float> adversarial_scores(const TokenIndex& idx, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.f, 0.5f);
  std::vector<float> s(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) {
    const std::string& b = idx.bytes(static_cast<int>(i));
    float v = u(rng);
    for (char ch : b) {
      const auto x = static_cast<unsigned char>(ch);
      if (std::isalnum(x) || x >= 0x80) v += 1.f;
      else if (ch == '[' || ch == '{' || ch == ',' || ch == '\\') v += 0.8f;
      else if (ch == '"' || ch == ']' || ch == '}') v -= 1.f;
    }
    s[i] = v;
  }
  for (int e : idx.eos_ids()) s[static_cast<size_t>(e)] = -1e6f;
  return s;
}

struct BudgetRun {
  std::string text;
  std::vector<int> ids;  // without EOS
  bool eos = false;
};

// The greedy loop of Generator::run over fixed per-token scores.
BudgetRun budget_loop(Constraint& c, const TokenIndex& idx, const std::vector<float>& score,
                      int max_tokens, bool set_budget = true) {
  BudgetRun r;
  c.reset();
  if (set_budget) c.set_budget(max_tokens);
  for (int step = 0; step < max_tokens; ++step) {
    const int t = adversarial_pick(c, score);
    REQUIRE(c.advance(t));
    if (idx.is_eos(t)) {
      r.eos = true;
      break;
    }
    r.ids.push_back(t);
    r.text += idx.bytes(t);
  }
  return r;
}

}  // namespace

TEST_CASE("schema constraint: a model that never closes still ends complete within the budget",
          "[grammar][budget]") {
  auto e2e = TokenIndex::build(e2e_vocab());
  REQUIRE(e2e);
  auto synth = TokenIndex::build(synthetic_vocab(3000, 7));
  REQUIRE(synth);
  TokenVocab limited_vocab = synthetic_vocab(1500, 8);
  for (int b = 0x80; b < 0x100; ++b) limited_vocab.bytes[6 + static_cast<size_t>(b)] = "";
  auto limited = TokenIndex::build(limited_vocab);
  REQUIRE(limited);
  std::mt19937 rng(777);
  size_t runs = 0, forced = 0;
  for (int set = 0; set < 120; ++set) {
    const auto tools = random_tools(rng, 10);
    const auto& index = set % 3 == 0 ? *e2e : set % 3 == 1 ? *synth : *limited;
    auto c = make_schema_constraint(index, tools);
    REQUIRE(c);
    const auto score = adversarial_scores(*index, rng);
    // Unlimited, this model does not finish in 300 steps.
    const BudgetRun free = budget_loop(**c, *index, score, 300, false);
    for (int max_tokens : {3, 4, 5, 8, 13, 21, 34, 55, 89, 144}) {
      const BudgetRun r = budget_loop(**c, *index, score, max_tokens);
      ++runs;
      INFO("max_tokens " << max_tokens << " output: " << r.text);
      REQUIRE(r.eos);
      REQUIRE(static_cast<int>(r.ids.size()) + 1 <= max_tokens);
      auto m = matcher(tools);
      REQUIRE(m.feed(r.text));
      REQUIRE(m.complete());
      auto ok = validate_output(r.text, tools);
      INFO(ok.message());
      REQUIRE(ok);
      if (!free.eos || free.ids.size() + 1 > static_cast<size_t>(max_tokens)) ++forced;
      // The budget only removes tokens whose shortest completion no longer fits: up to the
      // first such choice of the unlimited run both runs are the same.
      if (&index != &*limited) {  // there the constraint counts usable bytes only
        auto mm = matcher(tools);
        size_t same = 0;
        while (same < free.ids.size() && same < r.ids.size()) {
          REQUIRE(mm.feed(index->bytes(free.ids[same])));
          if (static_cast<int>(mm.shortest_completion_length()) > max_tokens - static_cast<int>(same) - 2) break;
          ++same;
        }
        CHECK(std::equal(free.ids.begin(), free.ids.begin() + static_cast<std::ptrdiff_t>(same), r.ids.begin()));
        if (free.eos && same == free.ids.size()) CHECK(r.ids == free.ids);
      }
    }
  }
  std::printf("budget: %zu runs, %zu where the unlimited output would not fit\n", runs, forced);
  CHECK(forced * 2 > runs);
}

TEST_CASE("schema constraint: an ample budget changes no mask", "[grammar][budget]") {
  auto synth = TokenIndex::build(synthetic_vocab(3000, 7));
  REQUIRE(synth);
  auto e2e = TokenIndex::build(e2e_vocab());
  REQUIRE(e2e);
  std::mt19937 rng(31337);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  size_t steps = 0;
  for (int set = 0; set < 60; ++set) {
    const auto tools = random_tools(rng, 20);
    const auto& index = set % 2 ? *e2e : *synth;
    auto a = make_schema_constraint(index, tools);
    auto b = make_schema_constraint(index, tools);
    REQUIRE(a);
    REQUIRE(b);
    (*b)->set_budget(100000);
    std::vector<uint8_t> ma, mb;
    for (int step = 0; step < 200; ++step) {
      const size_t na = (*a)->allowed(ma);
      const size_t nb = (*b)->allowed(mb);
      ++steps;
      REQUIRE(na == nb);
      REQUIRE(ma == mb);
      int best = -1;
      float best_v = -1;
      for (size_t i = 0; i < ma.size(); ++i) {
        if (!ma[i]) continue;
        float v = u(rng);
        const std::string& by = index->bytes(static_cast<int>(i));
        if (by.find_first_of("\"}]") != std::string::npos) v += 0.5f;
        if (index->is_eos(static_cast<int>(i))) v += 2.f;
        if (v > best_v) best_v = v, best = static_cast<int>(i);
      }
      REQUIRE((*a)->advance(best));
      REQUIRE((*b)->advance(best));
      if (index->is_eos(best)) break;
    }
  }
  CHECK(steps > 1000);
}

TEST_CASE("schema constraint: budgets below the shortest output", "[grammar][budget]") {
  // With a "[]" token, one step is enough for a complete (EOS-less) output; two steps always
  // are ("[" "]"); three give "[]" and EOS.
  auto synth = TokenIndex::build(synthetic_vocab(600, 5));
  REQUIRE(synth);
  TokenVocab plain = synthetic_vocab(600, 5);
  for (auto& b : plain.bytes)
    if (b.find("[]") != std::string::npos) b = "zz";
  auto no_pair = TokenIndex::build(plain);
  REQUIRE(no_pair);
  const auto tools = weather_tools();
  std::mt19937 rng(5);
  for (const auto* index : {&*synth, &*no_pair}) {
    auto c = make_schema_constraint(*index, tools);
    REQUIRE(c);
    const auto score = adversarial_scores(**index, rng);
    for (int max_tokens = 1; max_tokens <= 3; ++max_tokens) {
      const BudgetRun r = budget_loop(**c, **index, score, max_tokens);
      INFO("max_tokens " << max_tokens << " output: '" << r.text << "'");
      CHECK(static_cast<int>(r.ids.size()) + (r.eos ? 1 : 0) <= max_tokens);
      auto m = matcher(tools);
      REQUIRE(m.feed(r.text));
      if (max_tokens == 1 && index == &*no_pair) {
        CHECK(r.text.find('[') != std::string::npos);  // as close as one token gets
        CHECK_FALSE(m.complete());
      } else {
        CHECK(m.complete());
      }
      CHECK(r.eos == (max_tokens == 3 || (max_tokens == 2 && index == &*synth)));
    }
    // advance() refuses what the budget excludes.
    (*c)->reset();
    (*c)->set_budget(3);
    int open_call = -1;
    for (size_t i = 0; i < (*index)->size(); ++i)
      if ((*index)->bytes(static_cast<int>(i)) == "[{\"") open_call = static_cast<int>(i);
    REQUIRE(open_call >= 0);
    auto st = (*c)->advance(open_call);
    CHECK_FALSE(st);
    CHECK(st.message().find("budget") != std::string::npos);
    (*c)->set_budget(-1);
    CHECK((*c)->advance(open_call));
  }
}

// Constraint engines: the token index, `off`, and the reference (original Needle) trie engine
// on a hand-built vocabulary.
#include <catch2/catch.hpp>

#include <cmath>

#include "decode/constraint.h"
#include "decode/constraint_reference.h"
#include "decode/grammar.h"

using namespace needle::decode;

namespace {

// A hand-built vocabulary: id -> surface bytes.
const std::vector<std::string> kTokens = {
    "", "", "", "",                        // 0 PAD, 1 EOS, 2 BOS, 3 UNK
    "", "",                                // 4 <tool_call>, 5 <tools>
    "[{\"", "name", "\":\"", "get",        // 6..9
    "_", "weather", "\",\"", "arguments",  // 10..13
    "\":{\"", "location", "\":", "Paris",  // 14..17
    "\"}}]", "set", "\"", " get",          // 18..21
    "get_weather\",\"x", "g", "e", "t",    // 22..25
    "\xC3", "\xC3\xA9", "unit", "loc",     // 26 byte token 0xC3, 27 "é", 28, 29
    "ation\"", "{", "}", ",",              // 30..33
    "\":{\"zz", "b", "timer", "x",         // 34..37
    "\"name\":\"", "\",\"unit",            // 38, 39
};
enum : int {
  kTC = 4, kOpen = 6, kName = 7, kColonQ = 8, kGet = 9, kUnder = 10, kWeather = 11,
  kQCommaQ = 12, kArguments = 13, kArgsOpen = 14, kLocation = 15, kColon = 16, kParis = 17,
  kClose = 18, kSet = 19, kQuote = 20, kSpaceGet = 21, kGetWeatherX = 22, kG = 23, kByteC3 = 26,
  kEacute = 27, kUnit = 28, kLoc = 29, kAtionQ = 30, kLBrace = 31, kRBrace = 32, kComma = 33,
  kArgsOpenZZ = 34, kB = 35, kTimer = 36, kX = 37, kNameKey = 38, kQCommaQUnit = 39,
};

std::shared_ptr<const TokenIndex> hand_index() {
  TokenVocab v;
  v.bytes = kTokens;
  v.eos_ids = {1};
  v.lead_ids = {kTC};
  v.reference_bytes = kTokens;
  v.reference_bytes[kTC] = "<tool_call>";
  v.reference_bytes[5] = "<tools>";
  auto idx = TokenIndex::build(v);
  REQUIRE(idx);
  return *idx;
}

std::vector<RefTool> ref_tools() {
  return {{"get_weather", true, {"location", "unit"}},
          {"set_timer", true, {"minutes"}},
          {"noargs", true, {}},
          {"\xC3\x83" "b", true, {"x"}}};  // "Ãb": the byte token 0xC3 is chr(0xC3) = 'Ã'
}

std::vector<int> allowed_ids(Constraint& c) {
  std::vector<uint8_t> mask;
  c.allowed(mask);
  std::vector<int> out;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out.push_back(static_cast<int>(i));
  return out;
}

void feed(Constraint& c, std::initializer_list<int> ids) {
  for (int id : ids) {
    INFO("token " << id);
    REQUIRE(c.advance(id));
  }
}

}  // namespace

TEST_CASE("piece_surface and the token index", "[constraint]") {
  CHECK(piece_surface("\xE2\x96\x81get", false) == " get");
  CHECK(piece_surface("a\xE2\x96\x81\xE2\x96\x81", false) == "a  ");
  CHECK(piece_surface("<0x0A>", true) == "\n");
  CHECK(piece_surface("<0xC3>", true) == "\xC3");
  CHECK(piece_surface("<0xC3>", false) == "<0xC3>");
  auto idx = hand_index();
  CHECK(idx->size() == kTokens.size());
  CHECK(idx->is_eos(1));
  CHECK(idx->is_lead(kTC));
  CHECK(idx->chars(kByteC3) == U"\u00C3");
  CHECK(idx->chars(kEacute) == U"\u00E9");
  CHECK(idx->chars(kTC) == U"<tool_call>");
  CHECK(idx->bytes(kTC).empty());
  // Plain tokens (always fine inside a string) vs tokens with quotes, escapes or lone bytes.
  const auto& plain = idx->plain_ids();
  CHECK(std::find(plain.begin(), plain.end(), kParis) != plain.end());
  CHECK(std::find(plain.begin(), plain.end(), kEacute) != plain.end());
  CHECK(std::find(plain.begin(), plain.end(), kByteC3) == plain.end());
  CHECK(std::find(plain.begin(), plain.end(), kQuote) == plain.end());
  TokenVocab bad;
  bad.bytes = {"a"};
  bad.eos_ids = {3};
  CHECK_FALSE(TokenIndex::build(bad));
  CHECK(parse_constrain_mode("schema").value() == ConstrainMode::Schema);
  CHECK(parse_constrain_mode("reference").value() == ConstrainMode::Reference);
  CHECK(parse_constrain_mode("off").value() == ConstrainMode::Off);
  CHECK_FALSE(parse_constrain_mode("strict"));
}

TEST_CASE("constrain off: everything allowed", "[constraint]") {
  auto idx = hand_index();
  auto c = make_constraint(ConstrainMode::Off, idx, {});
  REQUIRE(c);
  CHECK(allowed_ids(**c).size() == kTokens.size());
  CHECK((*c)->advance(kQuote));
  CHECK_FALSE((*c)->advance(-1));
  CHECK((*c)->done());
  std::vector<float> logits(kTokens.size(), 1.f);
  (*c)->apply(logits.data(), logits.size());
  CHECK(logits[1] == 1.f);
}

TEST_CASE("reference: tool names walk the name trie", "[constraint]") {
  auto idx = hand_index();
  auto cr = make_reference_constraint(idx, ref_tools());
  REQUIRE(cr);
  Constraint& c = **cr;
  // Free state: unconstrained, and "done" (EOS is never masked there).
  CHECK(allowed_ids(c).size() == kTokens.size());
  CHECK(c.done());
  feed(c, {kTC, kOpen, kName, kColonQ});  // <tool_call>[{"name":"
  CHECK_FALSE(c.done());
  // Only tokens walking a name from the root: "get", "g", "set", "get_weather\",\"x" (valid up to
  // its quote at a terminal node; the rest is not checked), the byte token chr(0xC3) = 'Ã'.
  CHECK(allowed_ids(c) == std::vector<int>{kGet, kSet, kGetWeatherX, kG, kByteC3});
  CHECK_FALSE(c.advance(kSpaceGet));  // U+2581 is a space: never in a name
  CHECK_FALSE(c.advance(1));          // EOS has no text
  feed(c, {kGet});
  CHECK(allowed_ids(c) == std::vector<int>{kUnder});
  feed(c, {kUnder, kWeather});
  // At the terminal node every token starting with '"' is allowed, whatever follows it.
  CHECK(allowed_ids(c) == std::vector<int>{kColonQ, kQCommaQ, kArgsOpen, kColon, kClose, kQuote,
                                           kArgsOpenZZ, kNameKey, kQCommaQUnit});
  CHECK_FALSE(c.advance(kX));
  feed(c, {kQCommaQ});  // closes the name, then ',' and '"' are structural (not a key: not in arguments)
  CHECK(c.done());
  CHECK(allowed_ids(c).size() == kTokens.size());
}

TEST_CASE("reference: argument keys, values and nesting", "[constraint]") {
  auto idx = hand_index();
  auto cr = make_reference_constraint(idx, ref_tools());
  REQUIRE(cr);
  Constraint& c = **cr;
  feed(c, {kOpen, kName, kColonQ, kGetWeatherX});  // [{"name":"get_weather","x
  // The name closed inside the token; ',"x' was fed as free text (no key: not in arguments).
  CHECK(allowed_ids(c).size() == kTokens.size());
  c.reset();
  feed(c, {kOpen, kName, kColonQ, kGet, kUnder, kWeather, kQCommaQ, kArguments, kArgsOpen});
  // "arguments":{" opens a key: keys of get_weather only.
  CHECK(allowed_ids(c) == std::vector<int>{kLocation, kUnit, kLoc});
  feed(c, {kLoc, kAtionQ});  // "location" closed by the quote inside "ation\""
  CHECK(allowed_ids(c).size() == kTokens.size());
  // A string value: '"' after ':' starts a string; the '","' inside it closes the value, and
  // ,"  at the arguments depth opens the next key.
  feed(c, {kColon, kQuote, kParis, kQCommaQ});
  CHECK(allowed_ids(c) == std::vector<int>{kLocation, kUnit, kLoc});  // no de-duplication
  feed(c, {kUnit, kColon});
  // A nested object value: its keys are at a deeper depth and stay free, and "name":" inside
  // the arguments does not start a name.
  feed(c, {kLBrace, kNameKey});
  CHECK(allowed_ids(c).size() == kTokens.size());
  feed(c, {kX, kQuote, kRBrace, kComma, kQuote});  // ...x"},"  back at the arguments depth
  CHECK(allowed_ids(c) == std::vector<int>{kLocation, kUnit, kLoc});
}

TEST_CASE("a token budget changes nothing for off and reference", "[constraint][budget]") {
  // They mirror the original, which has no budget: the same masks under any budget.
  auto idx = hand_index();
  const std::vector<int> stream = {kTC, kOpen, kName, kColonQ, kGet, kUnder, kWeather, kQCommaQ,
                                   kArguments, kArgsOpen, kLoc, kAtionQ, kColon, kQuote, kParis,
                                   kClose};
  for (int budget : {0, 1, 2, 5}) {
    auto off = make_constraint(ConstrainMode::Off, idx, {});
    auto off_b = make_constraint(ConstrainMode::Off, idx, {});
    auto ref = make_reference_constraint(idx, ref_tools());
    auto ref_b = make_reference_constraint(idx, ref_tools());
    REQUIRE(off);
    REQUIRE(off_b);
    REQUIRE(ref);
    REQUIRE(ref_b);
    (*off_b)->set_budget(budget);
    (*ref_b)->set_budget(budget);
    for (int id : stream) {
      INFO("budget " << budget << " token " << id);
      CHECK(allowed_ids(**off) == allowed_ids(**off_b));
      CHECK(allowed_ids(**ref) == allowed_ids(**ref_b));
      CHECK((*ref)->done() == (*ref_b)->done());
      REQUIRE((*off)->advance(id));
      REQUIRE((*off_b)->advance(id));
      REQUIRE((*ref)->advance(id));
      REQUIRE((*ref_b)->advance(id));
    }
  }
}

TEST_CASE("reference: fallbacks to unconstrained", "[constraint]") {
  auto idx = hand_index();
  SECTION("a tool without parameters: nothing walks its empty key trie") {
    auto cr = make_reference_constraint(idx, {{"get_weather", true, {}}});
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ, kGet, kUnder, kWeather, kQCommaQ, kArguments, kArgsOpen});
    CHECK(allowed_ids(**cr).size() == kTokens.size());
  }
  SECTION("a tool whose parameters were not an object has no key trie") {
    auto cr = make_reference_constraint(idx, {{"get_weather", false, {}}});
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ, kGet, kUnder, kWeather, kQCommaQ, kArguments, kArgsOpen});
    CHECK(allowed_ids(**cr).size() == kTokens.size());
  }
  SECTION("characters entering a span inside the opening token are unchecked: off-trie") {
    auto cr = make_reference_constraint(idx, ref_tools());
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ, kGet, kUnder, kWeather, kQCommaQ, kArguments});
    CHECK(allowed_ids(**cr).size() == kTokens.size());
    feed(**cr, {kArgsOpenZZ});  // ":{"zz -> key buffer "zz", not a prefix of any key
    CHECK(allowed_ids(**cr).size() == kTokens.size());
    CHECK_FALSE((**cr).done());
    feed(**cr, {kQuote});  // closes the key
    CHECK((**cr).done());
  }
  SECTION("an unknown function name: keys unconstrained") {
    auto cr = make_reference_constraint(idx, {});
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ});
    CHECK(allowed_ids(**cr).size() == kTokens.size());  // empty name trie: nothing valid
    feed(**cr, {kX, kQCommaQ, kArguments, kArgsOpen});
    CHECK(allowed_ids(**cr).size() == kTokens.size());
  }
  SECTION("byte tokens are chr(byte): a name with U+00C3 takes the byte token 0xC3") {
    auto cr = make_reference_constraint(idx, ref_tools());
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ, kByteC3});
    CHECK(allowed_ids(**cr) == std::vector<int>{kB});
    feed(**cr, {kB, kQCommaQ, kArguments, kArgsOpen});
    CHECK(allowed_ids(**cr) == std::vector<int>{kX});
  }
  SECTION("user-defined symbols are fed as their spelling") {
    auto cr = make_reference_constraint(idx, {{"<tool_call>x", true, {}}});
    REQUIRE(cr);
    feed(**cr, {kOpen, kName, kColonQ});
    CHECK(allowed_ids(**cr) == std::vector<int>{kTC});
    feed(**cr, {kTC});
    CHECK(allowed_ids(**cr) == std::vector<int>{kX});
  }
}

TEST_CASE("reference: tools read from JSON like the original", "[constraint]") {
  auto t = reference_tools_from_json(
      R"([{"name":"a","parameters":{"p":{"type":"string"},"q":{}}},)"
      R"({"name":"b","parameters":{"type":"object","properties":{"x":{},"y":{}}}},)"
      R"({"name":"c","parameters":{"properties":["u","",3,"v"]}},)"
      R"({"name":"d","parameters":{"properties":"ké"}},)"
      R"({"name":"e","parameters":null},{"name":"","parameters":{}},{"nom":"f"},7,)"
      R"({"name":"g"}])");
  REQUIRE(t.size() == 6);
  CHECK(t[0].name == "a");
  CHECK(t[0].keys == std::vector<std::string>{"p", "q"});
  CHECK(t[1].keys == std::vector<std::string>{"x", "y"});
  CHECK(t[2].keys == std::vector<std::string>{"u", "", "v"});
  CHECK(t[3].keys == std::vector<std::string>{"k", "\xC3\xA9"});  // a str iterates its characters
  CHECK_FALSE(t[4].has_params);
  CHECK(t[5].name == "g");
  CHECK(t[5].has_params);
  CHECK(t[5].keys.empty());
  CHECK(reference_tools_from_json("not json").empty());
  CHECK(reference_tools_from_json("{\"name\":\"a\"}").empty());
}

// ---- Golden parity: the original's constrained generations on the e2e model -------------

#include <fstream>

#include "decode/constraint_text.h"
#include "text/json.h"

TEST_CASE("golden outputs of the original constrained decoder pass both engines", "[constraint]") {
  const std::string dir = std::string(NEEDLE_SHARED_FIXTURES) + "/e2e/";
  auto tok = needle::text::Tokenizer::from_file(dir + "e2e_tok.model");
  REQUIRE(tok);
  auto idx = TokenIndex::build(vocab_from_tokenizer(*tok));
  REQUIRE(idx);
  std::ifstream in(dir + "goldens.jsonl");
  REQUIRE(in);
  std::string line;
  size_t n = 0, schema_checked = 0;
  std::vector<uint8_t> mask;
  while (std::getline(in, line)) {
    auto ex = needle::json::parse(line);
    REQUIRE(ex);
    auto tools = needle::text::parse_tools(ex->find("tools")->text);
    REQUIRE(tools);
    std::vector<int> ids;
    for (const auto& v : ex->find("f32_constrained_ids")->array) ids.push_back(std::stoi(v.text));
    INFO("example " << n << ": " << ex->find("f32_constrained")->text);
    // Every token the original chose was allowed by its own constraint: ours must agree.
    auto ref = make_reference_constraint(*idx, reference_tools(*tools));
    REQUIRE(ref);
    std::string text;
    for (int id : ids) {
      (*ref)->allowed(mask);
      INFO("after '" << text << "' token " << id);
      REQUIRE(mask[static_cast<size_t>(id)]);
      REQUIRE((*ref)->advance(id));
      text += (*idx)->bytes(id);
    }
    CHECK((*ref)->done());
    // Schema: a conforming golden is reachable token by token and ends where EOS is allowed.
    const auto specs = tool_specs(*tools);
    if (validate_output(text, specs)) {
      ++schema_checked;
      auto sc = make_schema_constraint(*idx, specs);
      REQUIRE(sc);
      for (int id : ids) {
        (*sc)->allowed(mask);
        REQUIRE(mask[static_cast<size_t>(id)]);
        REQUIRE((*sc)->advance(id));
      }
      REQUIRE((*sc)->done());
      REQUIRE((*sc)->advance(1));
    }
    ++n;
  }
  CHECK(n == 144);
  CHECK(schema_checked >= 140);
}

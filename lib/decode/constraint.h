// Constraint engines for decoding: which token ids may come next, given the text so far.
//
// Engines work on plain inputs: each token id's surface bytes (U+2581 shown as a space, a
// byte-fallback token as its one raw byte, "" for ids without text) and a tool description
// of their own (ToolSpec below). See docs/decoding.md for the grammar and the per-step API.
//
// Per decode step the greedy loop does:
//   c->apply(logits, vocab);          // disallowed ids -> -inf (or c->allowed(mask))
//   int t = argmax(logits);
//   NEEDLE_TRY(c->advance(t));        // error if t was not allowed
//   if (index.is_eos(t)) break;
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "decode/trie.h"
#include "util/result.h"

namespace needle::decode {

// ---- Tools ------------------------------------------------------------------------------

enum class ArgType : uint8_t { Any, String, Number, Integer, Boolean, Null, Array, Object };

// One enum member: a string (decoded UTF-8 in `text`) or any other JSON value (its compact
// JSON text in `text`, e.g. "3", "true", "null").
struct EnumValue {
  bool is_string = true;
  std::string text;
};

struct ArgProp;

// A value's schema. Object with no properties = free-form JSON object; Array with no items =
// array of any JSON. A non-empty `enum_values` restricts the value to exactly those values.
struct ArgSchema {
  ArgType type = ArgType::Any;
  bool nullable = false;             // null allowed besides the type (Any and Null always)
  std::vector<EnumValue> enum_values;
  std::vector<ArgSchema> items;      // Array: 0 or 1 element (the item schema)
  std::vector<ArgProp> properties;   // Object: declared properties, in order
};

struct ArgProp {
  std::string name;  // decoded UTF-8
  ArgSchema schema;
  bool required = false;
};

// A tool as the decoder sees it (names as the model writes them, i.e. already snake_cased).
struct ToolSpec {
  std::string name;
  std::vector<ArgProp> args;  // the "arguments" object: always typed (no args: only {})
};

// ---- Vocabulary ---------------------------------------------------------------------------

struct TokenVocab {
  std::vector<std::string> bytes;  // index = token id; surface bytes, "" for ids with no text
  std::vector<int> eos_ids = {1};
  // Text-less ids the schema grammar allows only as the very first token (the model writes
  // <tool_call> = 4 first). The reference engine allows whatever the model writes there.
  std::vector<int> lead_ids;
  // Optional (empty or one per id): the text the reference engine sees instead of `bytes`.
  // The original feeds user-defined symbols as their spelling ("<tool_call>"), which the
  // schema engine must not see as text.
  std::vector<std::string> reference_bytes;
};

// A SentencePiece piece as surface bytes: U+2581 -> ' ', "<0xAB>" (byte piece) -> one byte.
std::string piece_surface(std::string_view piece, bool is_byte_piece);

// Per-vocabulary precomputation, shared by every constraint built for that tokenizer.
class TokenIndex {
 public:
  static Result<std::shared_ptr<const TokenIndex>> build(TokenVocab vocab);

  size_t size() const { return vocab_.bytes.size(); }
  const std::string& bytes(int id) const { return vocab_.bytes[static_cast<size_t>(id)]; }
  bool is_eos(int id) const { return flags_[static_cast<size_t>(id)] & kEos; }
  bool is_lead(int id) const { return flags_[static_cast<size_t>(id)] & kLead; }
  const std::vector<int>& eos_ids() const { return vocab_.eos_ids; }
  const std::vector<int>& lead_ids() const { return vocab_.lead_ids; }

  // Byte trie over all tokens with text.
  const ByteTrie& trie() const { return trie_; }
  // Tokens whose bytes are complete UTF-8 characters other than '"', '\\' and controls:
  // inside a JSON string they are always allowed; the rest go to `special_trie()`.
  const std::vector<int>& plain_ids() const { return plain_ids_; }
  const ByteTrie& special_trie() const { return special_trie_; }
  // Single-byte tokens available for each byte value.
  bool byte_available(uint8_t b) const { return single_[b]; }

  // The reference engine's view: the token as Python characters (UTF-8 decoded; a lone
  // non-UTF-8 byte becomes the code point of the same value, as chr(byte)).
  const std::u32string& chars(int id) const { return chars_[static_cast<size_t>(id)]; }
  const CodepointTrie& char_trie() const { return char_trie_; }

 private:
  enum : uint8_t { kEos = 1, kLead = 2 };
  TokenVocab vocab_;
  std::vector<uint8_t> flags_;
  ByteTrie trie_, special_trie_;
  std::vector<int> plain_ids_;
  bool single_[256] = {};
  std::vector<std::u32string> chars_;
  CodepointTrie char_trie_;
};

// ---- Engines ------------------------------------------------------------------------------

class Constraint {
 public:
  virtual ~Constraint() = default;
  // Back to the state before the first generated token.
  virtual void reset() = 0;
  // mask (resized to the vocab) gets 1 for allowed ids, 0 otherwise; returns how many.
  virtual size_t allowed(std::vector<uint8_t>& mask) = 0;
  // Consumes the chosen token; an error (state unchanged) if it was not allowed.
  virtual Status advance(int token) = 0;
  // Whether the output so far is complete (EOS allowed).
  virtual bool done() const = 0;
  // How many more tokens may be generated, EOS included, counting the next one (the decode
  // steps left); each advance() counts it down; negative or reset(): no limit. The schema
  // engine then allows a token only if the shortest completion after it, spelled with
  // single-byte tokens, plus EOS still fits, so the output always ends complete and valid
  // within the budget (docs/decoding.md). No-op for the other engines.
  virtual void set_budget(int remaining_tokens) { (void)remaining_tokens; }

  // Sets logits[i] = -inf for every disallowed id (n = vocab size).
  void apply(float* logits, size_t n);

 private:
  std::vector<uint8_t> scratch_;
};

enum class ConstrainMode { Off, Reference, Schema };
Result<ConstrainMode> parse_constrain_mode(std::string_view s);  // "off" | "reference" | "schema"
const char* constrain_mode_name(ConstrainMode m);

struct SchemaOptions {
  int max_int_digits = 24;   // digits before the point (and integers)
  int max_frac_digits = 24;  // digits after the point
  int max_exp_digits = 3;    // exponent digits
  bool allow_leading_space = true;  // one ' ' before '[' (SentencePiece's dummy prefix "▁[")
};

// Everything allowed, always done.
std::unique_ptr<Constraint> make_off_constraint(std::shared_ptr<const TokenIndex> index);

Result<std::unique_ptr<Constraint>> make_constraint(ConstrainMode mode,
                                                    std::shared_ptr<const TokenIndex> index,
                                                    const std::vector<ToolSpec>& tools,
                                                    const SchemaOptions& opt = {});

}  // namespace needle::decode

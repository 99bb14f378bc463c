// `--constrain schema` (the default): a byte-level grammar compiled from the tools that only
// lets the model write a JSON list of calls to declared tools with schema-valid arguments.
// Compact JSON: no whitespace outside strings (one optional leading space before '[': the
// SentencePiece dummy prefix "▁["). See docs/decoding.md for the full grammar.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "decode/constraint.h"

namespace needle::decode {

struct Grammar;  // compiled tools (grammar.cpp)

Result<std::shared_ptr<const Grammar>> compile_grammar(const std::vector<ToolSpec>& tools,
                                                       const SchemaOptions& opt = {});

// The schema constraint over a vocabulary. Fails if the vocabulary lacks a single-byte token
// for some printable ASCII byte (0x20..0x7E; byte-fallback vocabularies have all 256) or has
// no EOS id: without them some grammar state could have no allowed token.
Result<std::unique_ptr<Constraint>> make_schema_constraint(std::shared_ptr<const TokenIndex> index,
                                                           const std::vector<ToolSpec>& tools,
                                                           const SchemaOptions& opt = {});

// Byte-level view of the same grammar (tests, tools): feed bytes, ask what may come next.
class SchemaMatcher {
 public:
  explicit SchemaMatcher(std::shared_ptr<const Grammar> g);
  ~SchemaMatcher();
  SchemaMatcher(const SchemaMatcher&);
  SchemaMatcher& operator=(const SchemaMatcher&);

  void reset();
  // Feeds bytes; on a byte the grammar rejects returns false and leaves the state unchanged.
  bool feed(std::string_view bytes);
  // The output is a complete list (EOS would be allowed).
  bool complete() const;
  // Every byte value allowed next (each keeps a completion reachable).
  std::string allowed_bytes() const;
  // A shortest byte string that makes the output complete from here ("" when complete):
  // closes open strings, numbers, literals, arrays and objects, writes the still-required
  // keys with the shortest values of their schemas (`0`, `""`, `true`, `[]`, `{}`, `null` when
  // nullable and shorter, the shortest enum literal, objects with only their required keys),
  // then `]`. Feeding it gives complete(); the schema constraint forces it under a budget.
  std::string shortest_completion() const;
  size_t shortest_completion_length() const;  // == shortest_completion().size(), cheaper
  // Opaque; equal for equal automaton states (tests: searching over states).
  std::string state_key() const;

 private:
  struct State;
  std::shared_ptr<const Grammar> g_;
  std::unique_ptr<State> s_;
};

// Parses a finished output text and checks it against the tools: a JSON list of
// {"name":..,"arguments":{..}} objects, declared names, only declared argument names, no
// duplicate keys in typed objects, every required argument, values of the declared types,
// enums, valid UTF-8 and paired surrogate escapes. Independent of the grammar (its oracle in
// tests). Whitespace is accepted wherever JSON allows it.
Status validate_output(std::string_view text, const std::vector<ToolSpec>& tools);

}  // namespace needle::decode

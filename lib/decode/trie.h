// A static trie over the vocabulary's token strings, so constraint engines can walk their
// grammar state once per shared prefix instead of once per token.
//
// Built from (sequence, token id) pairs sorted lexicographically: every node's subtree is then
// one contiguous range of `order()`, and the tokens that end exactly at a node are the first
// `n_end` ids of that range (shorter sequences sort first). Children are sorted by label.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace needle::decode {

template <class Unit>
class TokenTrie {
 public:
  struct Edge {
    Unit label;
    uint32_t child;
  };
  struct Node {
    uint32_t first_edge = 0, n_edges = 0;
    uint32_t sub_begin = 0, sub_end = 0;  // range of order(): tokens in this subtree
    uint32_t n_end = 0;                   // order()[sub_begin, sub_begin + n_end) end here
  };

  TokenTrie() = default;
  // seqs[i] is the string of token ids[i]; empty strings are skipped (never reachable).
  void build(const std::vector<std::basic_string<Unit>>& seqs, const std::vector<int>& ids);

  const Node& node(uint32_t i) const { return nodes_[i]; }
  const Edge* edges(const Node& n) const { return edges_.data() + n.first_edge; }
  const std::vector<int>& order() const { return order_; }
  size_t size() const { return nodes_.size(); }
  size_t max_depth() const { return max_depth_; }
  // Child of node `n` by `label`, or UINT32_MAX.
  uint32_t child(uint32_t n, Unit label) const;

 private:
  uint32_t build_range(const std::vector<std::pair<std::basic_string<Unit>, int>>& items,
                       size_t lo, size_t hi, size_t depth);
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<int> order_;
  size_t max_depth_ = 0;
};

using ByteTrie = TokenTrie<unsigned char>;
using CodepointTrie = TokenTrie<char32_t>;

extern template class TokenTrie<unsigned char>;
extern template class TokenTrie<char32_t>;

}  // namespace needle::decode

#include "decode/trie.h"

#include <algorithm>
#include <limits>

namespace needle::decode {

template <class Unit>
void TokenTrie<Unit>::build(const std::vector<std::basic_string<Unit>>& seqs,
                            const std::vector<int>& ids) {
  std::vector<std::pair<std::basic_string<Unit>, int>> items;
  items.reserve(seqs.size());
  for (size_t i = 0; i < seqs.size() && i < ids.size(); ++i)
    if (!seqs[i].empty()) items.emplace_back(seqs[i], ids[i]);
  std::sort(items.begin(), items.end());
  nodes_.clear();
  edges_.clear();
  order_.clear();
  order_.reserve(items.size());
  for (const auto& it : items) order_.push_back(it.second);
  max_depth_ = 0;
  for (const auto& it : items) max_depth_ = std::max(max_depth_, it.first.size());
  build_range(items, 0, items.size(), 0);
}

template <class Unit>
uint32_t TokenTrie<Unit>::build_range(
    const std::vector<std::pair<std::basic_string<Unit>, int>>& items, size_t lo, size_t hi,
    size_t depth) {
  const auto self = static_cast<uint32_t>(nodes_.size());
  nodes_.push_back({});
  size_t i = lo;
  while (i < hi && items[i].first.size() == depth) ++i;
  nodes_[self].sub_begin = static_cast<uint32_t>(lo);
  nodes_[self].sub_end = static_cast<uint32_t>(hi);
  nodes_[self].n_end = static_cast<uint32_t>(i - lo);
  // Group the rest by their unit at `depth`; reserve this node's edges contiguously.
  std::vector<std::pair<size_t, size_t>> groups;
  for (size_t j = i; j < hi;) {
    size_t k = j;
    while (k < hi && items[k].first[depth] == items[j].first[depth]) ++k;
    groups.emplace_back(j, k);
    j = k;
  }
  nodes_[self].first_edge = static_cast<uint32_t>(edges_.size());
  nodes_[self].n_edges = static_cast<uint32_t>(groups.size());
  for (const auto& g : groups) edges_.push_back({items[g.first].first[depth], 0});
  for (size_t e = 0; e < groups.size(); ++e) {
    uint32_t c = build_range(items, groups[e].first, groups[e].second, depth + 1);
    edges_[nodes_[self].first_edge + e].child = c;
  }
  return self;
}

template <class Unit>
uint32_t TokenTrie<Unit>::child(uint32_t n, Unit label) const {
  const Node& nd = nodes_[n];
  const Edge* b = edges_.data() + nd.first_edge;
  const Edge* e = b + nd.n_edges;
  const Edge* it =
      std::lower_bound(b, e, label, [](const Edge& x, Unit l) { return x.label < l; });
  if (it != e && it->label == label) return it->child;
  return std::numeric_limits<uint32_t>::max();
}

template class TokenTrie<unsigned char>;
template class TokenTrie<char32_t>;

}  // namespace needle::decode

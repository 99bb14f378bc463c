#include "text/prompt.h"

#include <algorithm>

namespace needle::text {

EncoderInput build_encoder_input(std::span<const int> query_ids, std::span<const int> tools_ids, size_t max_enc_len) {
  max_enc_len = std::max<size_t>(max_enc_len, 2);
  EncoderInput in;
  in.query_total = query_ids.size();
  in.tools_total = tools_ids.size();
  in.query_kept = std::min(query_ids.size(), max_enc_len - 2);
  in.tools_kept = std::min(tools_ids.size(), max_enc_len - in.query_kept - 1);
  in.ids.reserve(in.query_kept + 1 + in.tools_kept);
  in.ids.insert(in.ids.end(), query_ids.begin(), query_ids.begin() + static_cast<ptrdiff_t>(in.query_kept));
  in.ids.push_back(kToolsId);
  in.ids.insert(in.ids.end(), tools_ids.begin(), tools_ids.begin() + static_cast<ptrdiff_t>(in.tools_kept));
  return in;
}

EncoderInput build_encoder_input(const Tokenizer& tok, std::string_view query, std::string_view tools_text,
                                 size_t max_enc_len) {
  std::vector<int> q = tok.encode(query);
  std::vector<int> t = tok.encode(tools_text);
  return build_encoder_input(q, t, max_enc_len);
}

std::string answer_model_text(const json::Value& answers) {
  if (answers.is_null()) return "[]";
  return json::dump_compact(snake_case_names(answers));
}

Result<std::string> answer_model_text(std::string_view answers_json) {
  if (answers_json.find_first_not_of(" \t\r\n") == std::string_view::npos) return std::string("[]");
  auto v = json::parse(answers_json);
  if (!v) return make_error("answers: {}", v.message());
  return answer_model_text(*v);
}

namespace {

// A position-tracking walk over (valid, parsed-before) JSON text that marks answer classes.
class ClassMarker {
 public:
  ClassMarker(std::string_view s, std::vector<uint8_t>& cls) : s_(s), cls_(cls) {}

  void top() {
    ws();
    if (peek() == '[') {
      ++p_;
      ws();
      if (peek() == ']') return;
      for (;;) {
        ws();
        if (peek() == '{') {
          call();
        } else {
          skip_value();
        }
        ws();
        if (peek() != ',') return;
        ++p_;
      }
    } else if (peek() == '{') {
      call();
    }
  }

 private:
  char peek() const { return p_ < s_.size() ? s_[p_] : '\0'; }
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r')) ++p_;
  }
  void mark(size_t b, size_t e, TokenClass c) {
    for (size_t i = b; i < e && i < cls_.size(); ++i) cls_[i] = std::max(cls_[i], static_cast<uint8_t>(c));
  }
  // At '"': returns the content span [b, e) and moves past the closing quote.
  std::pair<size_t, size_t> string() {
    size_t b = ++p_;
    while (p_ < s_.size() && s_[p_] != '"') p_ += (s_[p_] == '\\') ? 2 : 1;
    size_t e = std::min(p_, s_.size());
    ++p_;
    return {b, e};
  }
  // Skips any value; returns its span.
  std::pair<size_t, size_t> skip_value() {
    ws();
    size_t b = p_;
    char c = peek();
    if (c == '"') {
      string();
    } else if (c == '{' || c == '[') {
      int depth = 0;
      while (p_ < s_.size()) {
        char x = s_[p_];
        if (x == '"') {
          string();
          continue;
        }
        ++p_;
        if (x == '{' || x == '[') ++depth;
        if ((x == '}' || x == ']') && --depth == 0) break;
      }
    } else {
      while (p_ < s_.size() && s_[p_] != ',' && s_[p_] != '}' && s_[p_] != ']' && s_[p_] != ' ' &&
             s_[p_] != '\t' && s_[p_] != '\n' && s_[p_] != '\r')
        ++p_;
    }
    return {b, p_};
  }
  // Iterates an object's members: f(key_begin, key_end) is called at each value.
  template <class F>
  void members(F&& f) {
    ++p_;  // '{'
    for (;;) {
      ws();
      if (peek() != '"') {
        if (peek() == '}') ++p_;
        return;
      }
      auto [kb, ke] = string();
      ws();
      if (peek() == ':') ++p_;
      ws();
      f(kb, ke);
      ws();
      if (peek() == ',') {
        ++p_;
        continue;
      }
      if (peek() == '}') ++p_;
      return;
    }
  }
  void call() {
    members([&](size_t kb, size_t ke) {
      std::string_view key = s_.substr(kb, ke - kb);
      if (key == "name" && peek() == '"') {
        auto [b, e] = string();
        mark(b, e, TokenClass::Name);
      } else if (key == "arguments" && peek() == '{') {
        members([&](size_t ab, size_t ae) {
          mark(ab, ae, TokenClass::Key);
          if (peek() == '"') {
            auto [b, e] = string();
            mark(b, e, TokenClass::Value);
          } else {
            auto [b, e] = skip_value();
            mark(b, e, TokenClass::Value);
          }
        });
      } else {
        skip_value();
      }
    });
  }

  std::string_view s_;
  std::vector<uint8_t>& cls_;
  size_t p_ = 0;
};

}  // namespace

std::vector<uint8_t> answer_char_classes(std::string_view answer_text) {
  std::vector<uint8_t> cls(answer_text.size(), 0);
  if (!json::parse(answer_text)) return cls;
  ClassMarker(answer_text, cls).top();
  return cls;
}

std::vector<uint8_t> answer_token_classes(std::string_view answer_text, std::span<const TokenSpan> spans) {
  std::vector<uint8_t> cls = answer_char_classes(answer_text);
  std::vector<uint8_t> out;
  out.reserve(spans.size());
  for (const auto& sp : spans) {
    size_t b = std::min<size_t>(sp.begin, cls.size()), e = std::min<size_t>(sp.end, cls.size());
    if (b >= e) {
      // Leading byte pieces of a character (the last one carries the span) and the dummy
      // prefix: the class of the character that starts here.
      out.push_back(b < cls.size() ? cls[b] : (out.empty() ? 0 : out.back()));
      continue;
    }
    out.push_back(*std::max_element(cls.begin() + static_cast<ptrdiff_t>(b), cls.begin() + static_cast<ptrdiff_t>(e)));
  }
  return out;
}

std::vector<uint8_t> answer_token_classes(std::string_view answer_text, std::span<const std::string> pieces) {
  std::vector<uint8_t> cls = answer_char_classes(answer_text);
  std::vector<uint8_t> out;
  out.reserve(pieces.size());
  size_t pos = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string_view s = pieces[i];
    if (pos == 0 && !s.empty() && s[0] == ' ' && (answer_text.empty() || answer_text[0] != ' ')) s.remove_prefix(1);
    size_t b = std::min(pos, cls.size()), e = std::min(pos + s.size(), cls.size());
    pos += s.size();
    if (b >= e) {
      out.push_back(out.empty() ? 0 : out.back());
      continue;
    }
    out.push_back(*std::max_element(cls.begin() + static_cast<ptrdiff_t>(b), cls.begin() + static_cast<ptrdiff_t>(e)));
  }
  return out;
}

Result<DecoderExample> build_decoder_example(const Tokenizer& tok, std::string_view answer_text, size_t max_dec_len) {
  std::vector<TokenSpan> spans = tok.encode_with_spans(answer_text);
  if (spans.size() + 3 > max_dec_len)
    return make_error("answer of {} tokens is too long: {} + 3 > {}", spans.size(), spans.size(), max_dec_len);
  std::vector<uint8_t> cls = answer_token_classes(answer_text, spans);
  DecoderExample ex;
  ex.input = {kEosId, kToolCallId};
  ex.target = {kToolCallId};
  ex.target_class = {0};
  for (size_t i = 0; i < spans.size(); ++i) {
    ex.input.push_back(spans[i].id);
    ex.target.push_back(spans[i].id);
    ex.target_class.push_back(cls[i]);
  }
  ex.target.push_back(kEosId);
  ex.target_class.push_back(0);
  return ex;
}

}  // namespace needle::text

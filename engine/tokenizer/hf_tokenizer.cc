// Tokenizer::FromJson: Hugging Face tokenizer.json with a BPE model. The pipeline and each
// component follow the reference library (tokenizers 0.22): added tokens are split out first,
// the rest is normalized, pre-tokenized and run through BPE; the post-processor adds BOS/EOS;
// decoders turn tokens back into text.
#include <algorithm>
#include <array>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/onig_regex.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace hgrn2 {
namespace {

using Json = nlohmann::json;

// Tables are indexed by id, so ids are bounded: 16.7M is 60 times the largest vocabularies in
// use (256k), and keeps a hostile file from asking for gigabytes.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

absl::Status Invalid(absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ": ", message));
}

// The field `name` of object `node`, or nullptr when absent or null.
const Json* Field(const Json& node, const char* name) {
  if (!node.is_object()) return nullptr;
  auto it = node.find(name);
  if (it == node.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> StringField(const Json& node, const char* name,
                                        absl::string_view path) {
  const Json* field = Field(node, name);
  if (field == nullptr || !field->is_string()) {
    return Invalid(path, absl::StrCat("\"", name, "\" must be a string"));
  }
  return field->get<std::string>();
}

absl::StatusOr<bool> BoolField(const Json& node, const char* name, bool fallback,
                               absl::string_view path) {
  const Json* field = Field(node, name);
  if (field == nullptr) return fallback;
  if (!field->is_boolean()) return Invalid(path, absl::StrCat("\"", name, "\" must be a boolean"));
  return field->get<bool>();
}

absl::StatusOr<int64_t> IntField(const Json& node, const char* name, int64_t fallback,
                                 absl::string_view path) {
  const Json* field = Field(node, name);
  if (field == nullptr) return fallback;
  if (!field->is_number_integer()) {
    return Invalid(path, absl::StrCat("\"", name, "\" must be an integer"));
  }
  return field->get<int64_t>();
}

absl::StatusOr<const Json*> ArrayField(const Json& node, const char* name, absl::string_view path) {
  const Json* field = Field(node, name);
  if (field == nullptr || !field->is_array()) {
    return Invalid(path, absl::StrCat("\"", name, "\" must be a list"));
  }
  return field;
}

// Sequences may nest; parsing recurses, so a bound keeps hostile files from exhausting the
// stack. Each level adds one "[i]" to the path.
absl::Status CheckNesting(const std::string& path) {
  constexpr int kMaxDepth = 32;
  if (std::count(path.begin(), path.end(), '[') >= kMaxDepth) {
    return Invalid(path, absl::StrCat("Sequence nested more than ", kMaxDepth, " deep"));
  }
  return absl::OkStatus();
}

// The components listed in `field` of a Sequence, each parsed by `parse(node, path)`.
template <typename Component, typename Parse>
absl::StatusOr<std::vector<std::unique_ptr<Component>>> ParseList(const Json& node,
                                                                  const char* field,
                                                                  const std::string& path,
                                                                  Parse parse) {
  HGRN2_RETURN_IF_ERROR(CheckNesting(path));
  HGRN2_ASSIGN_OR_RETURN(const Json* list, ArrayField(node, field, path));
  std::vector<std::unique_ptr<Component>> parts;
  for (size_t i = 0; i < list->size(); ++i) {
    HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Component> part,
                           parse((*list)[i], absl::StrCat(path, ".", field, "[", i, "]")));
    parts.push_back(std::move(part));
  }
  return parts;
}

// A pattern as tokenizer.json writes it: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;               // when not a regex
  std::unique_ptr<OnigRegex> regex;  // when a regex

  void FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
    if (regex) {
      regex->FindAll(text, matches);
      return;
    }
    if (literal.empty()) return;
    for (size_t at = text.find(literal); at != absl::string_view::npos;
         at = text.find(literal, at + literal.size())) {
      matches->emplace_back(at, at + literal.size());
    }
  }
};

absl::StatusOr<Pattern> ParsePattern(const Json& node, absl::string_view path) {
  const Json* pattern = Field(node, "pattern");
  if (pattern == nullptr || !pattern->is_object()) {
    return Invalid(path, "\"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
  }
  Pattern result;
  if (const Json* literal = Field(*pattern, "String"); literal && literal->is_string()) {
    result.literal = literal->get<std::string>();
    return result;
  }
  if (const Json* regex = Field(*pattern, "Regex"); regex && regex->is_string()) {
    absl::StatusOr<std::unique_ptr<OnigRegex>> compiled =
        OnigRegex::Compile(regex->get<std::string>());
    if (!compiled.ok()) return Invalid(path, compiled.status().message());
    result.regex = *std::move(compiled);
    return result;
  }
  return Invalid(path, "\"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte-to-character table: printable bytes stand for themselves, the others map to
// U+0100 on, so that every byte string is a string of visible characters.
struct ByteTable {
  std::array<std::string, 256> byte_to_char;
  std::array<int16_t, 324> char_to_byte;  // code point -> byte, -1 when none
  ByteTable() {
    char_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const int code_point = printable ? b : next++;
      unicode::AppendCodePoint(code_point, &byte_to_char[b]);
      char_to_byte[code_point] = static_cast<int16_t>(b);
    }
  }
};

const ByteTable& Bytes() {
  static const ByteTable* table = new ByteTable();
  return *table;
}

// ---------------------------------------------------------------------------------------------
// Normalizers: whole-string rewrites.
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::Status Normalize(std::string* text) const = 0;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);  // HF prepends only to non-empty text
    return absl::OkStatus();
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_.FindAll(*text, &matches);
    if (matches.empty()) return absl::OkStatus();
    std::string out;
    out.reserve(text->size());
    size_t last = 0;
    for (const auto& [begin, end] : matches) {
      out.append(*text, last, begin - last);
      out += content_;
      last = end;
    }
    out.append(*text, last);
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class NfcNormalizer : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    HGRN2_ASSIGN_OR_RETURN(*text, unicode::Nfc(*text));
    return absl::OkStatus();
  }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& part : parts_) HGRN2_RETURN_IF_ERROR(part->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& node,
                                                            const std::string& path) {
  HGRN2_ASSIGN_OR_RETURN(std::string type, StringField(node, "type", path));
  if (type == "Prepend") {
    HGRN2_ASSIGN_OR_RETURN(std::string prepend, StringField(node, "prepend", path));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    HGRN2_ASSIGN_OR_RETURN(Pattern pattern, ParsePattern(node, path));
    HGRN2_ASSIGN_OR_RETURN(std::string content, StringField(node, "content", path));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Sequence") {
    HGRN2_ASSIGN_OR_RETURN(auto parts,
                           ParseList<Normalizer>(node, "normalizers", path, ParseNormalizer));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  return Invalid(path, absl::StrCat("unsupported normalizer type \"", type,
                                    "\" (supported: Prepend, Replace, NFC, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: split a piece of normalized text into the pieces BPE sees.
struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the original text (Metaspace's "first" scheme)
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Matches to spans that cover [0, size), as HF's Pattern::find_matches.
std::vector<Span> ToSpans(size_t size, const std::vector<std::pair<size_t, size_t>>& matches,
                          bool invert) {
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [begin, end] : matches) {
    if (last < begin) spans.push_back({last, begin, invert});
    spans.push_back({begin, end, !invert});
    last = end;
  }
  if (last < size) spans.push_back({last, size, invert});
  return spans;
}

// HF's NormalizedString::split: how matches join their neighbours.
std::vector<Span> ApplyBehavior(const std::vector<Span>& spans, SplitBehavior behavior) {
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return spans;
    case SplitBehavior::kRemoved:
      for (const Span& span : spans) {
        if (!span.is_match) out.push_back(span);
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back(span);
        }
        previous_match = span.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      return out;
    case SplitBehavior::kContiguous:
      for (const Span& span : spans) {
        if (span.is_match == previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back(span);
        }
        previous_match = span.is_match;
      }
      return out;
  }
  return out;
}

void AppendSplits(const Piece& piece, const std::vector<Span>& spans, std::vector<Piece>* out) {
  for (const Span& span : spans) {
    if (span.end <= span.begin) continue;  // HF drops empty splits
    out->push_back(
        {piece.text.substr(span.begin, span.end - span.begin), piece.at_start && span.begin == 0});
  }
}

// Each character for which `predicate` holds is a match of its own.
template <typename Predicate>
std::vector<std::pair<size_t, size_t>> CharMatches(absl::string_view text, Predicate predicate) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = unicode::CharLength(text, pos);
    if (predicate(text.substr(pos, length))) matches.emplace_back(pos, pos + length);
    pos += length;
  }
  return matches;
}

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void PreTokenize(std::vector<Piece>* pieces) const = 0;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, const OnigRegex* regex)
      : add_prefix_space_(add_prefix_space), regex_(regex) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    std::vector<std::pair<size_t, size_t>> matches;
    for (Piece& piece : *pieces) {
      if (add_prefix_space_ && !absl::StartsWith(piece.text, " ")) piece.text.insert(0, 1, ' ');
      if (regex_ != nullptr) {
        matches.clear();
        regex_->FindAll(piece.text, &matches);
        AppendSplits(piece, ToSpans(piece.text.size(), matches, false), &out);
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    const ByteTable& table = Bytes();
    for (Piece& piece : out) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (char c : piece.text) mapped += table.byte_to_char[static_cast<uint8_t>(c)];
      piece.text = std::move(mapped);
    }
    *pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  const OnigRegex* regex_;  // GPT-2's pattern, or nullptr (use_regex false)
};

// GPT-2's split pattern, as HF's ByteLevel pre-tokenizer compiles it.
const OnigRegex* Gpt2Regex() {
  static const OnigRegex* regex =
      OnigRegex::Compile(
          R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)")
          ->release();
  return regex;
}

enum class PrependScheme { kAlways, kNever, kFirst };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (Piece& piece : *pieces) {
      piece.text = absl::StrReplaceAll(piece.text, {{" ", replacement_}});
      const bool prepend =
          scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && piece.at_start);
      if (prepend && !piece.text.empty() && !absl::StartsWith(piece.text, replacement_)) {
        piece.text.insert(0, replacement_);
      }
      if (!split_) {
        if (!piece.text.empty()) out.push_back(std::move(piece));
        continue;
      }
      const auto matches =
          CharMatches(piece.text, [&](absl::string_view c) { return c == replacement_; });
      AppendSplits(
          piece,
          ApplyBehavior(ToSpans(piece.text.size(), matches, false), SplitBehavior::kMergedWithNext),
          &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    std::vector<std::pair<size_t, size_t>> matches;
    for (const Piece& piece : *pieces) {
      matches.clear();
      pattern_.FindAll(piece.text, &matches);
      AppendSplits(piece, ApplyBehavior(ToSpans(piece.text.size(), matches, invert_), behavior_),
                   &out);
    }
    *pieces = std::move(out);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : *pieces) {
      const auto matches = CharMatches(piece.text, [](absl::string_view c) {
        return unicode::IsNumeric(unicode::CodePointAt(c, 0));
      });
      AppendSplits(
          piece,
          ApplyBehavior(ToSpans(piece.text.size(), matches, false),
                        individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous),
          &out);
    }
    *pieces = std::move(out);
  }

 private:
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& part : parts_) part->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& node, absl::string_view path) {
  if (const Json* scheme = Field(node, "prepend_scheme")) {
    const std::string name = scheme->is_string() ? scheme->get<std::string>() : "";
    if (name == "always") return PrependScheme::kAlways;
    if (name == "never") return PrependScheme::kNever;
    if (name == "first") return PrependScheme::kFirst;
    return Invalid(path, absl::StrCat("\"prepend_scheme\" must be always, never or first, not ",
                                      scheme->dump()));
  }
  // The older form: add_prefix_space true means always.
  HGRN2_ASSIGN_OR_RETURN(bool add_prefix_space, BoolField(node, "add_prefix_space", true, path));
  return add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
}

absl::StatusOr<std::string> ParseReplacement(const Json& node, absl::string_view path) {
  HGRN2_ASSIGN_OR_RETURN(std::string replacement, StringField(node, "replacement", path));
  if (replacement.empty() || unicode::FindInvalidUtf8(replacement) ||
      unicode::CharLength(replacement, 0) != replacement.size()) {
    return Invalid(path, "\"replacement\" must be one character");
  }
  return replacement;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& node,
                                                                const std::string& path) {
  HGRN2_ASSIGN_OR_RETURN(std::string type, StringField(node, "type", path));
  if (type == "ByteLevel") {
    HGRN2_ASSIGN_OR_RETURN(bool add_prefix_space, BoolField(node, "add_prefix_space", true, path));
    HGRN2_ASSIGN_OR_RETURN(bool use_regex, BoolField(node, "use_regex", true, path));
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space,
                                                   use_regex ? Gpt2Regex() : nullptr);
  }
  if (type == "Metaspace") {
    HGRN2_ASSIGN_OR_RETURN(std::string replacement, ParseReplacement(node, path));
    HGRN2_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(node, path));
    HGRN2_ASSIGN_OR_RETURN(bool split, BoolField(node, "split", true, path));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
  }
  if (type == "Split") {
    HGRN2_ASSIGN_OR_RETURN(Pattern pattern, ParsePattern(node, path));
    HGRN2_ASSIGN_OR_RETURN(std::string behavior_name, StringField(node, "behavior", path));
    SplitBehavior behavior;
    if (behavior_name == "Removed") {
      behavior = SplitBehavior::kRemoved;
    } else if (behavior_name == "Isolated") {
      behavior = SplitBehavior::kIsolated;
    } else if (behavior_name == "MergedWithPrevious") {
      behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior_name == "MergedWithNext") {
      behavior = SplitBehavior::kMergedWithNext;
    } else if (behavior_name == "Contiguous") {
      behavior = SplitBehavior::kContiguous;
    } else {
      return Invalid(path, absl::StrCat("unknown split behavior \"", behavior_name, "\""));
    }
    HGRN2_ASSIGN_OR_RETURN(bool invert, BoolField(node, "invert", false, path));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
  }
  if (type == "Digits") {
    HGRN2_ASSIGN_OR_RETURN(bool individual, BoolField(node, "individual_digits", false, path));
    return std::make_unique<DigitsPreTokenizer>(individual);
  }
  if (type == "Sequence") {
    HGRN2_ASSIGN_OR_RETURN(auto parts,
                           ParseList<PreTokenizer>(node, "pretokenizers", path, ParsePreTokenizer));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  return Invalid(path, absl::StrCat("unsupported pre_tokenizer type \"", type,
                                    "\" (supported: ByteLevel, Metaspace, Split, Digits, "
                                    "Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Decoders: a list of token strings to a list of strings, joined at the end.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Decode(std::vector<std::string>* tokens) const = 0;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : normalizer_(std::move(pattern), std::move(content)) {}
  void Decode(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) normalizer_.Normalize(&token).IgnoreError();
  }

 private:
  ReplaceNormalizer normalizer_;  // the same string rewrite, per token
};

// True for "<0xXX>", with the byte in `byte`.
bool ParseByteToken(absl::string_view token, uint8_t* byte) {
  if (token.size() != 6 || !absl::StartsWith(token, "<0x") || token[5] != '>') return false;
  int value = 0;
  for (char c : token.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    value = value * 16 + digit;
  }
  *byte = static_cast<uint8_t>(value);
  return true;
}

class ByteFallbackDecoder : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (!unicode::FindInvalidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        // HF replaces every byte of an invalid run, not just the invalid subparts.
        for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back(unicode::kReplacementChar);
      }
      bytes.clear();
    };
    for (std::string& token : *tokens) {
      uint8_t byte;
      if (ParseByteToken(token, &byte)) {
        bytes.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens) const override {
    std::string fused = absl::StrJoin(*tokens, "");
    tokens->assign(1, std::move(fused));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Decode(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      absl::string_view view = token;
      for (size_t i = 0; i < start_ && absl::StartsWith(view, content_); ++i) {
        view.remove_prefix(content_.size());
      }
      for (size_t i = 0; i < stop_ && absl::EndsWith(view, content_); ++i) {
        view.remove_suffix(content_.size());
      }
      token = std::string(view);
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

class ByteLevelDecoder : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens) const override {
    const ByteTable& table = Bytes();
    std::string bytes;
    for (const std::string& token : *tokens) {
      // A token with a character outside the table (an added token) contributes its own bytes.
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size() && all_mapped;) {
        const int32_t c = unicode::CodePointAt(token, pos);
        all_mapped = c >= 0 && c < 324 && table.char_to_byte[c] >= 0;
        if (all_mapped) mapped.push_back(static_cast<char>(table.char_to_byte[c]));
        pos += unicode::CharLength(token, pos);
      }
      bytes += all_mapped ? mapped : token;
    }
    tokens->assign(1, unicode::DecodeLossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void Decode(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      // HF drops every replacement character of the first token, not just a leading one.
      const bool drop = i == 0 && scheme_ != PrependScheme::kNever;
      (*tokens)[i] = absl::StrReplaceAll((*tokens)[i], {{replacement_, drop ? "" : " "}});
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void Decode(std::vector<std::string>* tokens) const override {
    for (const auto& part : parts_) part->Decode(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

struct DecoderTraits {
  bool byte_fallback = false;  // byte tokens join into characters
  bool byte_level = false;     // tokens are GPT-2 byte characters
};

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& node, const std::string& path,
                                                      DecoderTraits* traits) {
  HGRN2_ASSIGN_OR_RETURN(std::string type, StringField(node, "type", path));
  if (type == "Replace") {
    HGRN2_ASSIGN_OR_RETURN(Pattern pattern, ParsePattern(node, path));
    HGRN2_ASSIGN_OR_RETURN(std::string content, StringField(node, "content", path));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
  }
  if (type == "ByteFallback") {
    traits->byte_fallback = true;
    return std::make_unique<ByteFallbackDecoder>();
  }
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    HGRN2_ASSIGN_OR_RETURN(std::string content, StringField(node, "content", path));
    HGRN2_ASSIGN_OR_RETURN(int64_t start, IntField(node, "start", 0, path));
    HGRN2_ASSIGN_OR_RETURN(int64_t stop, IntField(node, "stop", 0, path));
    if (content.empty() || start < 0 || stop < 0) {
      return Invalid(path, "Strip needs a non-empty \"content\" and non-negative start/stop");
    }
    return std::make_unique<StripDecoder>(std::move(content), static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "ByteLevel") {
    traits->byte_level = true;
    return std::make_unique<ByteLevelDecoder>();
  }
  if (type == "Metaspace") {
    HGRN2_ASSIGN_OR_RETURN(std::string replacement, ParseReplacement(node, path));
    HGRN2_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(node, path));
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme);
  }
  if (type == "Sequence") {
    HGRN2_ASSIGN_OR_RETURN(
        auto parts, ParseList<Decoder>(node, "decoders", path,
                                       [traits](const Json& part, const std::string& part_path) {
                                         return ParseDecoder(part, part_path, traits);
                                       }));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  return Invalid(path, absl::StrCat("unsupported decoder type \"", type,
                                    "\" (supported: Replace, ByteFallback, Fuse, Strip, "
                                    "ByteLevel, Metaspace, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Post-processors: for one sequence, the ids before and after the text's.
struct Template {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

absl::Status ParsePostProcessor(const Json& node, const std::string& path, Template* result) {
  HGRN2_ASSIGN_OR_RETURN(std::string type, StringField(node, "type", path));
  if (type == "ByteLevel") return absl::OkStatus();  // changes offsets only
  if (type == "Sequence") {
    HGRN2_RETURN_IF_ERROR(CheckNesting(path));
    HGRN2_ASSIGN_OR_RETURN(const Json* list, ArrayField(node, "processors", path));
    for (size_t i = 0; i < list->size(); ++i) {
      HGRN2_RETURN_IF_ERROR(
          ParsePostProcessor((*list)[i], absl::StrCat(path, ".processors[", i, "]"), result));
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return Invalid(path, absl::StrCat("unsupported post_processor type \"", type,
                                      "\" (supported: TemplateProcessing, ByteLevel, Sequence)"));
  }
  HGRN2_ASSIGN_OR_RETURN(const Json* single, ArrayField(node, "single", path));
  const Json* specials = Field(node, "special_tokens");
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const std::string item_path = absl::StrCat(path, ".single[", i, "]");
    const Json& item = (*single)[i];
    if (const Json* sequence = Field(item, "Sequence")) {
      HGRN2_ASSIGN_OR_RETURN(std::string id, StringField(*sequence, "id", item_path));
      if (id != "A") return Invalid(item_path, absl::StrCat("sequence \"", id, "\" in \"single\""));
      if (seen_sequence) return Invalid(item_path, "sequence A appears twice");
      seen_sequence = true;
      continue;
    }
    const Json* special = Field(item, "SpecialToken");
    if (special == nullptr) {
      return Invalid(item_path, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    HGRN2_ASSIGN_OR_RETURN(std::string name, StringField(*special, "id", item_path));
    const Json* entry = specials == nullptr ? nullptr : Field(*specials, name.c_str());
    const Json* ids = entry == nullptr ? nullptr : Field(*entry, "ids");
    if (ids == nullptr || !ids->is_array()) {
      return Invalid(item_path,
                     absl::StrCat("special token \"", name, "\" is not in \"special_tokens\""));
    }
    for (const Json& id : *ids) {
      if (!id.is_number_integer()) {
        return Invalid(item_path,
                       absl::StrCat("special token \"", name, "\" has a non-integer id"));
      }
      if (id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId) {
        return Invalid(item_path, absl::StrCat("special token \"", name, "\" has id ", id.dump(),
                                               " outside [0, ", kMaxTokenId, "]"));
      }
      (seen_sequence ? result->suffix : result->prefix).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) return Invalid(path, "\"single\" has no sequence $A");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
  bool lstrip;
  bool rstrip;
  bool single_word;
  bool normalized;
};

// Finds added tokens in text as HF's AddedVocabulary does: leftmost, then longest; lstrip and
// rstrip take the whitespace beside a match into it; single_word needs non-word neighbours.
class AddedTokenMatcher {
 public:
  struct Segment {
    size_t begin;
    size_t end;
    int32_t id;  // -1: text to tokenize
  };

  void Add(const AddedToken* token) {
    if (token->content.empty()) return;
    auto& list = by_first_byte_[static_cast<uint8_t>(token->content[0])];
    list.push_back(token);
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->content.size() > b->content.size();
    });
  }

  std::vector<Segment> Split(absl::string_view text) const {
    std::vector<Segment> segments;
    size_t last = 0;  // end of the previous token's segment
    for (size_t pos = 0; pos < text.size();) {
      const AddedToken* found = nullptr;
      for (const AddedToken* token : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
        if (absl::StartsWith(text.substr(pos), token->content)) {
          found = token;
          break;
        }
      }
      if (found == nullptr) {
        ++pos;
        continue;
      }
      size_t begin = pos;
      size_t end = pos + found->content.size();
      if (found->single_word && !(IsWordBoundary(text, begin) && IsWordBoundary(text, end))) {
        ++pos;
        continue;
      }
      if (found->lstrip) {
        while (begin > last) {
          size_t prev = begin - 1;
          while (prev > last && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
          if (!unicode::IsWhitespace(unicode::CodePointAt(text, prev))) break;
          begin = prev;
        }
      }
      if (found->rstrip) {
        while (end < text.size() && unicode::IsWhitespace(unicode::CodePointAt(text, end))) {
          end += unicode::CharLength(text, end);
        }
      }
      if (last < begin) segments.push_back({last, begin, -1});
      segments.push_back({begin, end, found->id});
      last = pos = end;
    }
    if (last < text.size() || segments.empty()) segments.push_back({last, text.size(), -1});
    return segments;
  }

 private:
  // No word character (alphanumeric or '_') on both sides of `pos`.
  static bool IsWordBoundary(absl::string_view text, size_t pos) {
    auto is_word = [&](size_t at) {
      const int32_t c = unicode::CodePointAt(text, at);
      return c == '_' || unicode::IsAlphanumeric(c);
    };
    if (pos < text.size() && is_word(pos) && pos > 0) {
      size_t prev = pos - 1;
      while (prev > 0 && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
      return !is_word(prev);
    }
    return true;
  }

  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
};

class HfTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const Json& root);

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_id() const override {
    if (template_.prefix.empty()) return std::nullopt;
    return template_.prefix.front();
  }
  std::optional<int32_t> eos_id() const override {
    if (template_.suffix.empty()) return std::nullopt;
    return template_.suffix.back();
  }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size_ && is_special_[id];
  }
  std::string kind() const override { return "tokenizer.json (BPE)"; }
  std::string PieceOf(int32_t id) const override {
    const std::string* token = TokenOf(id);
    return token != nullptr ? *token : std::string();
  }
  bool MayJoinNext(int32_t id) const override {
    uint8_t byte;
    const std::string* token = TokenOf(id);
    return traits_.byte_fallback && token != nullptr && added_by_id_.count(id) == 0 &&
           ParseByteToken(*token, &byte);
  }
  bool IsStreamAnchor(int32_t id) const override {
    const std::string* token = TokenOf(id);
    if (token == nullptr || token->empty() || added_by_id_.count(id) > 0 || MayJoinNext(id)) {
      return false;
    }
    if (traits_.byte_level) {
      // The first byte the token stands for must not continue a character.
      const int32_t c = unicode::CodePointAt(*token, 0);
      if (c < 0 || c >= 324 || Bytes().char_to_byte[c] < 0) return false;
      return (Bytes().char_to_byte[c] & 0xC0) != 0x80;
    }
    return true;
  }

 private:
  const std::string* TokenOf(int32_t id) const {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &it->second->content;
    return model_->IdToToken(id);
  }

  std::vector<std::unique_ptr<AddedToken>> added_;
  absl::flat_hash_map<int32_t, const AddedToken*> added_by_id_;
  AddedTokenMatcher raw_matcher_;         // added tokens with normalized = false
  AddedTokenMatcher normalized_matcher_;  // ... with normalized = true
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  Template template_;
  std::unique_ptr<Decoder> decoder_;
  DecoderTraits traits_;
  int32_t vocab_size_ = 0;
  std::vector<bool> is_special_;
};

absl::StatusOr<std::unique_ptr<BpeModel>> ParseModel(const Json& node) {
  const std::string path = "model";
  if (!node.is_object()) return Invalid(path, "must be an object");
  if (const Json* type = Field(node, "type")) {
    const std::string name = type->is_string() ? type->get<std::string>() : type->dump();
    if (name != "BPE") {
      return Invalid(path, absl::StrCat("unsupported model type \"", name, "\" (supported: BPE)"));
    }
  }
  if (const Json* dropout = Field(node, "dropout");
      dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return Invalid(path, "BPE dropout makes encoding random; serving needs it null");
  }
  const Json* vocab_json = Field(node, "vocab");
  if (vocab_json == nullptr || !vocab_json->is_object()) {
    return Invalid(path, "\"vocab\" must be an object of token: id");
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    if (!it->is_number_integer()) {
      return Invalid(path, absl::StrCat("vocab entry \"", it.key(), "\" has a non-integer id"));
    }
    if (it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxTokenId) {
      return Invalid(path, absl::StrCat("vocab entry \"", it.key(), "\" has id ", it->dump(),
                                        " outside [0, ", kMaxTokenId, "]"));
    }
    vocab[it.key()] = it->get<int32_t>();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (const Json* merges_json = Field(node, "merges")) {
    if (!merges_json->is_array()) return Invalid(path, "\"merges\" must be a list");
    merges.reserve(merges_json->size());
    for (size_t i = 0; i < merges_json->size(); ++i) {
      const Json& merge = (*merges_json)[i];
      if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        if (space == std::string::npos) {
          return Invalid(path, absl::StrCat("merges[", i, "] \"", text, "\" is not \"a b\""));
        }
        merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      } else {
        return Invalid(path, absl::StrCat("merges[", i, "] is neither \"a b\" nor [\"a\", \"b\"]"));
      }
    }
  }
  BpeModel::Options options;
  if (const Json* unk = Field(node, "unk_token")) {
    if (!unk->is_string()) return Invalid(path, "\"unk_token\" must be a string");
    options.unk_token = unk->get<std::string>();
  }
  if (const Json* prefix = Field(node, "continuing_subword_prefix");
      prefix && prefix->is_string()) {
    options.continuing_subword_prefix = prefix->get<std::string>();
  }
  if (const Json* suffix = Field(node, "end_of_word_suffix"); suffix && suffix->is_string()) {
    options.end_of_word_suffix = suffix->get<std::string>();
  }
  HGRN2_ASSIGN_OR_RETURN(options.fuse_unk, BoolField(node, "fuse_unk", false, path));
  HGRN2_ASSIGN_OR_RETURN(options.byte_fallback, BoolField(node, "byte_fallback", false, path));
  HGRN2_ASSIGN_OR_RETURN(options.ignore_merges, BoolField(node, "ignore_merges", false, path));
  absl::StatusOr<std::unique_ptr<BpeModel>> model =
      BpeModel::Create(std::move(vocab), merges, std::move(options));
  if (!model.ok()) return Invalid(path, model.status().message());
  return model;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Create(const Json& root) {
  if (!root.is_object()) return Invalid("(root)", "must be an object");
  auto tokenizer = std::make_unique<HfTokenizer>();
  const Json* model = Field(root, "model");
  if (model == nullptr) return Invalid("model", "missing");
  HGRN2_ASSIGN_OR_RETURN(tokenizer->model_, ParseModel(*model));
  int32_t max_id = tokenizer->model_->max_id();

  if (const Json* added = Field(root, "added_tokens")) {
    if (!added->is_array()) return Invalid("added_tokens", "must be a list");
    for (size_t i = 0; i < added->size(); ++i) {
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      const Json& node = (*added)[i];
      auto token = std::make_unique<AddedToken>();
      HGRN2_ASSIGN_OR_RETURN(int64_t id, IntField(node, "id", -1, path));
      if (id < 0 || id > kMaxTokenId) {
        return Invalid(path, absl::StrCat("\"id\" must be an integer in [0, ", kMaxTokenId, "]"));
      }
      token->id = static_cast<int32_t>(id);
      HGRN2_ASSIGN_OR_RETURN(token->content, StringField(node, "content", path));
      if (token->content.empty()) return Invalid(path, "\"content\" is empty");
      HGRN2_ASSIGN_OR_RETURN(token->special, BoolField(node, "special", false, path));
      HGRN2_ASSIGN_OR_RETURN(token->lstrip, BoolField(node, "lstrip", false, path));
      HGRN2_ASSIGN_OR_RETURN(token->rstrip, BoolField(node, "rstrip", false, path));
      HGRN2_ASSIGN_OR_RETURN(token->single_word, BoolField(node, "single_word", false, path));
      HGRN2_ASSIGN_OR_RETURN(token->normalized,
                             BoolField(node, "normalized", !token->special, path));
      if (tokenizer->added_by_id_.contains(token->id)) {
        return Invalid(path, absl::StrCat("id ", token->id, " is given to two added tokens"));
      }
      max_id = std::max(max_id, token->id);
      tokenizer->added_by_id_[token->id] = token.get();
      (token->normalized ? tokenizer->normalized_matcher_ : tokenizer->raw_matcher_)
          .Add(token.get());
      tokenizer->added_.push_back(std::move(token));
    }
  }
  tokenizer->vocab_size_ = max_id + 1;
  tokenizer->is_special_.assign(static_cast<size_t>(tokenizer->vocab_size_), false);
  for (const auto& token : tokenizer->added_) {
    if (token->special) tokenizer->is_special_[token->id] = true;
  }

  if (const Json* node = Field(root, "normalizer")) {
    HGRN2_ASSIGN_OR_RETURN(tokenizer->normalizer_, ParseNormalizer(*node, "normalizer"));
  }
  if (const Json* node = Field(root, "pre_tokenizer")) {
    HGRN2_ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_, ParsePreTokenizer(*node, "pre_tokenizer"));
  }
  if (const Json* node = Field(root, "post_processor")) {
    HGRN2_RETURN_IF_ERROR(ParsePostProcessor(*node, "post_processor", &tokenizer->template_));
    for (int32_t id : tokenizer->template_.prefix) {
      if (id < 0 || id >= tokenizer->vocab_size_) {
        return Invalid("post_processor",
                       absl::StrCat("special token id ", id, " is outside the vocabulary"));
      }
    }
    for (int32_t id : tokenizer->template_.suffix) {
      if (id < 0 || id >= tokenizer->vocab_size_) {
        return Invalid("post_processor",
                       absl::StrCat("special token id ", id, " is outside the vocabulary"));
      }
    }
  }
  if (const Json* node = Field(root, "decoder")) {
    HGRN2_ASSIGN_OR_RETURN(tokenizer->decoder_,
                           ParseDecoder(*node, "decoder", &tokenizer->traits_));
  }
  // truncation and padding shape training batches; a server encodes one text whole.
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(absl::string_view text,
                                                         bool add_special) const {
  if (std::optional<size_t> bad = unicode::FindInvalidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text is not valid UTF-8: byte 0x%02X at offset %d",
                        static_cast<uint8_t>(text[*bad]), *bad));
  }
  std::vector<int32_t> ids;
  if (add_special) ids = template_.prefix;
  std::vector<Piece> pieces;
  for (const AddedTokenMatcher::Segment& segment : raw_matcher_.Split(text)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    std::string normalized(text.substr(segment.begin, segment.end - segment.begin));
    if (normalizer_) HGRN2_RETURN_IF_ERROR(normalizer_->Normalize(&normalized));
    for (const AddedTokenMatcher::Segment& part : normalized_matcher_.Split(normalized)) {
      if (part.id >= 0) {
        ids.push_back(part.id);
        continue;
      }
      pieces.clear();
      pieces.push_back({normalized.substr(part.begin, part.end - part.begin),
                        segment.begin == 0 && part.begin == 0});
      if (pre_tokenizer_) pre_tokenizer_->PreTokenize(&pieces);
      for (const Piece& piece : pieces) model_->Tokenize(piece.text, &ids);
    }
  }
  if (add_special) ids.insert(ids.end(), template_.suffix.begin(), template_.suffix.end());
  return ids;
}

absl::StatusOr<std::string> HfTokenizer::Decode(absl::Span<const int32_t> ids,
                                                bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const std::string* token = TokenOf(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " at position ", i,
                                                     " is not in the vocabulary (", vocab_size_,
                                                     " ids)"));
    }
    if (skip_special && is_special_[id]) continue;
    tokens.push_back(*token);
  }
  if (!decoder_) return absl::StrJoin(tokens, " ");
  decoder_->Decode(&tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json) {
  try {
    const Json root = Json::parse(json.begin(), json.end());
    return HfTokenizer::Create(root);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
}

}  // namespace hgrn2

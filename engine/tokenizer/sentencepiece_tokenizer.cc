// Tokenizer::FromSentencePiece: a tokenizer.model run by libsentencepiece itself. Encoding with
// special tokens adds BOS, as transformers' LlamaTokenizer does by default (add_bos_token).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/sentencepiece_bridge.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace hgrn2 {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  absl::Status Load(absl::string_view model_proto) {
    if (model_proto.empty()) {
      return absl::InvalidArgumentError("tokenizer.model: the file is empty");
    }
    const std::string error =
        bridge_.Load(std::string_view(model_proto.data(), model_proto.size()));
    if (!error.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.model: not a SentencePiece model: ", error));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special) const override {
    if (std::optional<size_t> bad = unicode::FindInvalidUtf8(text)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("text is not valid UTF-8: byte 0x%02X at offset %d",
                          static_cast<uint8_t>(text[*bad]), *bad));
    }
    std::vector<int> pieces;
    const std::string error = bridge_.Encode(std::string_view(text.data(), text.size()), &pieces);
    if (!error.empty()) return absl::InternalError(absl::StrCat("SentencePiece: ", error));
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 1);
    if (add_special && bridge_.bos_id() >= 0) ids.push_back(bridge_.bos_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }

  // SentencePiece never prints control pieces (<s>, </s>), so `skip_special` changes nothing.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool) const override {
    std::vector<int> pieces(ids.begin(), ids.end());
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (pieces[i] < 0 || pieces[i] >= bridge_.piece_count()) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", pieces[i], " at position ", i,
                                                       " is not in the vocabulary (",
                                                       bridge_.piece_count(), " ids)"));
      }
    }
    std::string text;
    const std::string error = bridge_.Decode(pieces, &text);
    if (!error.empty()) return absl::InternalError(absl::StrCat("SentencePiece: ", error));
    return text;
  }

  int32_t vocab_size() const override { return bridge_.piece_count(); }
  std::optional<int32_t> bos_id() const override {
    if (bridge_.bos_id() < 0) return std::nullopt;
    return bridge_.bos_id();
  }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }  // not added
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size() && bridge_.IsControl(id);
  }
  std::string kind() const override { return "tokenizer.model (SentencePiece)"; }
  std::string PieceOf(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? bridge_.Piece(id) : std::string();
  }
  bool MayJoinNext(int32_t id) const override {
    return id >= 0 && id < vocab_size() && bridge_.IsByte(id);
  }
  bool IsStreamAnchor(int32_t id) const override {
    return id >= 0 && id < vocab_size() && !bridge_.IsByte(id) && !bridge_.IsControl(id) &&
           !bridge_.Piece(id).empty();
  }

 private:
  SentencePieceBridge bridge_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSentencePiece(
    absl::string_view model_proto) {
  auto tokenizer = std::make_unique<SentencePieceTokenizer>();
  if (absl::Status status = tokenizer->Load(model_proto); !status.ok()) return status;
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace hgrn2

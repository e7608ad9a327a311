// The libsentencepiece side of SentencePieceBridge (no Abseil headers here; see the header).
#include "engine/tokenizer/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>

namespace hgrn2 {

SentencePieceBridge::SentencePieceBridge()
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceBridge::~SentencePieceBridge() = default;

std::string SentencePieceBridge::Load(std::string_view model_proto) {
  const sentencepiece::util::Status status = processor_->LoadFromSerializedProto(model_proto);
  return status.ok() ? std::string() : status.ToString();
}

std::string SentencePieceBridge::Encode(std::string_view text, std::vector<int>* ids) const {
  const sentencepiece::util::Status status = processor_->Encode(text, ids);
  return status.ok() ? std::string() : status.ToString();
}

std::string SentencePieceBridge::Decode(const std::vector<int>& ids, std::string* text) const {
  const sentencepiece::util::Status status = processor_->Decode(ids, text);
  return status.ok() ? std::string() : status.ToString();
}

int SentencePieceBridge::piece_count() const { return processor_->GetPieceSize(); }
int SentencePieceBridge::bos_id() const { return processor_->bos_id(); }
int SentencePieceBridge::eos_id() const { return processor_->eos_id(); }
bool SentencePieceBridge::IsControl(int id) const { return processor_->IsControl(id); }
bool SentencePieceBridge::IsByte(int id) const { return processor_->IsByte(id); }
bool SentencePieceBridge::IsUnknown(int id) const { return processor_->IsUnknown(id); }
std::string SentencePieceBridge::Piece(int id) const { return processor_->IdToPiece(id); }

}  // namespace hgrn2

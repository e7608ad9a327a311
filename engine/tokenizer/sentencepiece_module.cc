// libhgrn2_sentencepiece.so: SentencePieceModuleProcessor over libsentencepiece (see the header).
#include "engine/tokenizer/sentencepiece_module.h"

#include <sentencepiece_processor.h>

#include <memory>

namespace hgrn2 {
namespace {

class Processor final : public SentencePieceModuleProcessor {
 public:
  std::string Load(std::string_view model_proto) override {
    return Message(processor_.LoadFromSerializedProto(model_proto));
  }
  std::string Encode(std::string_view text, std::vector<int>* ids) const override {
    return Message(processor_.Encode(text, ids));
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    return Message(processor_.Decode(ids, text));
  }
  int piece_count() const override { return processor_.GetPieceSize(); }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }
  bool IsControl(int id) const override { return processor_.IsControl(id); }
  bool IsByte(int id) const override { return processor_.IsByte(id); }
  bool IsUnknown(int id) const override { return processor_.IsUnknown(id); }
  std::string Piece(int id) const override { return processor_.IdToPiece(id); }

 private:
  static std::string Message(const sentencepiece::util::Status& status) {
    return status.ok() ? std::string() : status.ToString();
  }

  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace
}  // namespace hgrn2

extern "C" __attribute__((visibility("default"))) hgrn2::SentencePieceModuleProcessor*
hgrn2_new_sentencepiece_processor() {
  return new hgrn2::Processor();
}

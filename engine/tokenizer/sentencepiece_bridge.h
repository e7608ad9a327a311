// A narrow bridge to libsentencepiece, which lives in its own module loaded at run time
// (sentencepiece_module.h says why). Its header declares its own absl::string_view, which clashes
// with Abseil's, so only the module includes it and this header uses standard types alone.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hgrn2 {

class SentencePieceModuleProcessor;

// Thread-safe after Load: encoding and decoding do not modify the processor.
class SentencePieceBridge {
 public:
  SentencePieceBridge();
  ~SentencePieceBridge();

  // Each returns an empty string on success, else SentencePiece's error message. Load also fails
  // when the module cannot be loaded; the other methods are only called after a Load succeeded.
  std::string Load(std::string_view model_proto);
  std::string Encode(std::string_view text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;

  int piece_count() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;
  bool IsControl(int id) const;
  bool IsByte(int id) const;
  bool IsUnknown(int id) const;
  std::string Piece(int id) const;

 private:
  std::unique_ptr<SentencePieceModuleProcessor> processor_;  // null without the module
};

}  // namespace hgrn2

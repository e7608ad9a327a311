// The interface between SentencePieceBridge and the SentencePiece module
// (libhgrn2_sentencepiece.so), which alone links libsentencepiece. Standard types only.
//
// Why a module: Debian's libsentencepiece carries its own copy of protobuf-lite 3.14 and exports
// its symbols. Linked into a program that also loads libprotobuf 3.21 (the server), one copy's
// symbols serve both and the process crashes. The bridge loads the module with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND): libsentencepiece then resolves protobuf to its own copy and stays invisible to
// the rest of the process.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hgrn2 {

// One sentencepiece::SentencePieceProcessor. Errors are returned as messages (empty = success).
class SentencePieceModuleProcessor {
 public:
  virtual ~SentencePieceModuleProcessor() = default;
  virtual std::string Load(std::string_view model_proto) = 0;
  virtual std::string Encode(std::string_view text, std::vector<int>* ids) const = 0;
  virtual std::string Decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int piece_count() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual std::string Piece(int id) const = 0;
};

// The module's one exported function: a new processor, owned by the caller.
using NewSentencePieceProcessorFn = SentencePieceModuleProcessor* (*)();
inline constexpr const char* kSentencePieceModuleFile = "libhgrn2_sentencepiece.so";
inline constexpr const char* kNewSentencePieceProcessorSymbol = "hgrn2_new_sentencepiece_processor";

}  // namespace hgrn2

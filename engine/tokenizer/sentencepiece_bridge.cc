// SentencePieceBridge: loads the SentencePiece module once (dlopen, see sentencepiece_module.h)
// and forwards to a processor made by it.
#include "engine/tokenizer/sentencepiece_bridge.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "engine/tokenizer/sentencepiece_module.h"

namespace hgrn2 {
namespace {

// RTLD_DEEPBIND keeps libsentencepiece on its own protobuf. The sanitizers' runtimes refuse it;
// sanitizer builds load the module without it (and so cannot use tokenizer.model in a process
// that also loads libprotobuf).
// (gcc says so with __SANITIZE_*__, clang before 16 only through __has_feature).
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HGRN2_SANITIZER_RUNTIME 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    defined(HGRN2_SANITIZER_RUNTIME)
constexpr int kOpenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kOpenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

struct Module {
  NewSentencePieceProcessorFn create = nullptr;
  std::string error;
};

// Where the module may be: $HGRN2_SENTENCEPIECE_MODULE, beside the executable, in ../lib from
// it, then the loader's search path.
std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* given = std::getenv("HGRN2_SENTENCEPIECE_MODULE")) paths.emplace_back(given);
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    const std::filesystem::path dir = std::filesystem::path(std::string(exe, n)).parent_path();
    paths.push_back((dir / kSentencePieceModuleFile).string());
    paths.push_back((dir / ".." / "lib" / kSentencePieceModuleFile).string());
  }
  paths.emplace_back(kSentencePieceModuleFile);
  return paths;
}

const Module& LoadModule() {
  static Module module;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string errors;
    for (const std::string& path : Candidates()) {
      if (path.find('/') != std::string::npos && !std::filesystem::exists(path)) continue;
      void* handle = dlopen(path.c_str(), kOpenFlags);
      if (handle == nullptr) {
        errors += std::string(errors.empty() ? "" : "; ") + dlerror();
        continue;
      }
      module.create = reinterpret_cast<NewSentencePieceProcessorFn>(
          dlsym(handle, kNewSentencePieceProcessorSymbol));
      if (module.create != nullptr) return;
      errors += "; " + path + " has no " + kNewSentencePieceProcessorSymbol;
    }
    module.error = std::string("cannot load the SentencePiece module ") + kSentencePieceModuleFile +
                   " (" + errors + "); set HGRN2_SENTENCEPIECE_MODULE to its path";
  });
  return module;
}

}  // namespace

SentencePieceBridge::SentencePieceBridge() {
  const Module& module = LoadModule();
  if (module.create != nullptr) processor_.reset(module.create());
}

SentencePieceBridge::~SentencePieceBridge() = default;

std::string SentencePieceBridge::Load(std::string_view model_proto) {
  if (!processor_) return LoadModule().error;
  return processor_->Load(model_proto);
}

std::string SentencePieceBridge::Encode(std::string_view text, std::vector<int>* ids) const {
  return processor_->Encode(text, ids);
}

std::string SentencePieceBridge::Decode(const std::vector<int>& ids, std::string* text) const {
  return processor_->Decode(ids, text);
}

int SentencePieceBridge::piece_count() const { return processor_->piece_count(); }
int SentencePieceBridge::bos_id() const { return processor_->bos_id(); }
int SentencePieceBridge::eos_id() const { return processor_->eos_id(); }
bool SentencePieceBridge::IsControl(int id) const { return processor_->IsControl(id); }
bool SentencePieceBridge::IsByte(int id) const { return processor_->IsByte(id); }
bool SentencePieceBridge::IsUnknown(int id) const { return processor_->IsUnknown(id); }
std::string SentencePieceBridge::Piece(int id) const { return processor_->Piece(id); }

}  // namespace hgrn2

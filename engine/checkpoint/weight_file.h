// Safetensors checkpoints: memory-mapped, validated, single file or sharded by an index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/base/dtype.h"

namespace hgrn2 {

// One tensor inside a mapped file. The bytes stay valid while the WeightFile lives.
struct TensorView {
  std::string name;
  std::string file;  // the file it came from, for error messages
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const std::byte> bytes;  // little-endian payload, no alignment guarantee

  int64_t num_elements() const;
};

// A checkpoint's tensors, from one `.safetensors` file or from the shards listed in a
// `model.safetensors.index.json`. Every header is validated when opened: header length within the
// file, valid JSON, known dtypes, shapes matching byte ranges, ranges within the data section and
// not overlapping. Any violation is an InvalidArgument (DataLoss for truncation) naming the file
// and the tensor; nothing is ever read out of bounds.
//
// Thread-safety: const methods may be called from any thread.
class WeightFile {
 public:
  // `path` is a `.safetensors` file, a `model.safetensors.index.json`, or a model folder holding
  // `model.safetensors` or `model.safetensors.index.json` (the index wins when both exist).
  static absl::StatusOr<WeightFile> Open(const std::filesystem::path& path);

  WeightFile(WeightFile&&) noexcept;
  WeightFile& operator=(WeightFile&&) noexcept;
  ~WeightFile();

  // NotFound naming the tensor when absent.
  absl::StatusOr<TensorView> Tensor(absl::string_view name) const;
  bool Contains(absl::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> Names() const;

  // The tensor converted to float32, after checking that its shape is `expected_shape` and its
  // dtype is F32, F16, BF16 or F64. Errors name the tensor, the file, and both shapes.
  absl::StatusOr<std::vector<float>> ReadFloat(absl::string_view name,
                                               absl::Span<const int64_t> expected_shape) const;

 private:
  struct MappedFile;
  WeightFile() = default;

  // Maps and validates one safetensors file and adds its tensors; a name already present (from
  // another shard) is an error naming both files.
  absl::Status AddFile(const std::filesystem::path& path);
  // Adds every shard named by an index and checks that each tensor is in the shard it names.
  absl::Status AddShardsOfIndex(const std::filesystem::path& index_path);

  std::string source_;  // what was opened (file or index), for error messages
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

// Parses a safetensors header (the JSON after the 8-byte length) for a data section of
// `data_size` bytes. Exposed for tests and fuzzing; `file` only labels error messages. No data
// section is given, so the returned views' `bytes` are empty; the tensors are sorted by name.
absl::StatusOr<std::vector<TensorView>> ParseSafetensorsHeader(absl::string_view header_json,
                                                               size_t data_size,
                                                               absl::string_view file);

// Parses and validates a whole safetensors file held in memory (8-byte little-endian header
// length, header, data section); the views' `bytes` point into `file_bytes`. Pure, like
// ParseSafetensorsHeader, and the fuzzing entry point for the whole format.
absl::StatusOr<std::vector<TensorView>> ParseSafetensors(absl::Span<const std::byte> file_bytes,
                                                         absl::string_view file);

// Writes a safetensors file (used by tests and tools that build checkpoints). Tensors are laid
// out in the order given.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              absl::Span<const TensorToWrite> tensors);

}  // namespace hgrn2

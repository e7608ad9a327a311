// Safetensors parsing, validation and memory mapping; sharded checkpoints; the test-side writer.
#include "engine/checkpoint/weight_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/file_io.h"
#include "engine/base/json_excerpt.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {
namespace {

using Json = nlohmann::json;

// The reference implementation refuses larger headers; so do we, which also bounds the memory a
// hostile header can make the JSON parser allocate.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kIndexFileName[] = "model.safetensors.index.json";
constexpr char kSingleFileName[] = "model.safetensors";

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string Excerpt(const Json& value) { return JsonExcerpt(value, 60); }

// A tensor's entry in a header, before it is bound to the bytes of a mapped file.
struct HeaderEntry {
  TensorView view;  // `bytes` still empty
  uint64_t begin = 0;
  uint64_t end = 0;
};

absl::StatusOr<int64_t> ParseDim(const Json& value, absl::string_view file,
                                 absl::string_view name) {
  if (!value.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": tensor \"", name, "\": shape must be an array of integers, got ", Excerpt(value)));
  }
  if (value.is_number_unsigned()) {
    const uint64_t dim = value.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor \"", name, "\": dimension ", dim, " is too large"));
    }
    return static_cast<int64_t>(dim);
  }
  const int64_t dim = value.get<int64_t>();
  if (dim < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", name, "\": negative dimension ", dim, " in shape"));
  }
  return dim;
}

absl::StatusOr<HeaderEntry> ParseEntry(const std::string& name, const Json& entry, size_t data_size,
                                       absl::string_view file) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", name, "\": ", what));
  };
  if (!entry.is_object()) {
    return invalid(absl::StrCat("entry must be a JSON object, got ", Excerpt(entry)));
  }
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end()) return invalid("missing \"dtype\"");
  if (shape_it == entry.end()) return invalid("missing \"shape\"");
  if (offsets_it == entry.end()) return invalid("missing \"data_offsets\"");

  HeaderEntry out;
  out.view.name = name;
  out.view.file = std::string(file);

  if (!dtype_it->is_string()) {
    return invalid(absl::StrCat("\"dtype\" must be a string, got ", Excerpt(*dtype_it)));
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  absl::StatusOr<DType> dtype = ParseDType(dtype_name);
  if (!dtype.ok()) return invalid(dtype.status().message());
  out.view.dtype = *dtype;

  if (!shape_it->is_array()) {
    return invalid(
        absl::StrCat("\"shape\" must be an array of integers, got ", Excerpt(*shape_it)));
  }
  // Element count and byte size are checked for overflow as the shape is read, so that no later
  // multiplication of these dimensions can overflow either.
  const uint64_t element_size = DTypeSize(out.view.dtype);
  const uint64_t max_elements = std::numeric_limits<uint64_t>::max() / element_size;
  uint64_t elements = 1;
  bool overflow = false;
  bool empty = false;
  for (const Json& dim_json : *shape_it) {
    HGRN2_ASSIGN_OR_RETURN(const int64_t dim, ParseDim(dim_json, file, name));
    out.view.shape.push_back(dim);
    if (dim == 0) {
      empty = true;
    } else if (!overflow && elements > max_elements / static_cast<uint64_t>(dim)) {
      overflow = true;
    } else if (!overflow) {
      elements *= static_cast<uint64_t>(dim);
    }
  }
  // The product of the non-zero dimensions must fit even when a zero makes the tensor empty, so
  // that products of any of the dimensions stay in range for every consumer.
  if (overflow || elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return invalid(absl::StrCat("shape ", ShapeString(out.view.shape), " of ",
                                DTypeName(out.view.dtype),
                                ": element count or byte size overflows"));
  }

  if (empty) elements = 0;

  const Json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return invalid(
        absl::StrCat("\"data_offsets\" must be [begin, end] with non-negative integers, got ",
                     Excerpt(offsets)));
  }
  out.begin = offsets[0].get<uint64_t>();
  out.end = offsets[1].get<uint64_t>();
  if (out.begin > out.end) {
    return invalid(
        absl::StrCat("data_offsets [", out.begin, ", ", out.end, "] has begin after end"));
  }
  if (out.end > data_size) {
    return absl::DataLossError(
        absl::StrCat(file, ": tensor \"", name, "\": data_offsets [", out.begin, ", ", out.end,
                     "] end past the data section (", data_size, " bytes): the file is truncated"));
  }
  const uint64_t expected_bytes = elements * element_size;
  if (out.end - out.begin != expected_bytes) {
    return invalid(absl::StrCat("data_offsets [", out.begin, ", ", out.end, "] hold ",
                                out.end - out.begin, " bytes but ", DTypeName(out.view.dtype), " ",
                                ShapeString(out.view.shape), " needs ", expected_bytes));
  }
  return out;
}

// Validates a header and returns its tensors sorted by name, with their offsets in the data
// section. Pure: no I/O.
absl::StatusOr<std::vector<HeaderEntry>> ParseHeaderEntries(absl::string_view header_json,
                                                            size_t data_size,
                                                            absl::string_view file) {
  // The DOM keeps only the last of repeated keys; a repeated tensor name would silently hide a
  // tensor, so the top-level keys are watched as they are parsed.
  std::set<std::string> seen_keys;
  std::string repeated_key;
  auto watch_keys = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second && repeated_key.empty()) repeated_key = key;
    }
    return true;
  };
  Json header;
  try {  // with allow_exceptions false only allocation failures can throw; keep them inside
    header = Json::parse(header_json.begin(), header_json.end(), watch_keys,
                         /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(file, ": cannot parse safetensors header: ", e.what()));
  }
  if (header.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": safetensors header is not valid JSON"));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": safetensors header must be a JSON object, got ", Excerpt(header)));
  }
  if (!repeated_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", repeated_key, "\" appears twice in the header"));
  }

  std::vector<HeaderEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": \"__metadata__\" must be a JSON object, got ", Excerpt(entry)));
      }
      continue;
    }
    HGRN2_ASSIGN_OR_RETURN(HeaderEntry parsed, ParseEntry(name, entry, data_size, file));
    entries.push_back(std::move(parsed));
  }

  // Overlap check on the ranges sorted by start; empty ranges overlap nothing.
  std::vector<const HeaderEntry*> by_offset;
  for (const HeaderEntry& entry : entries) {
    if (entry.end > entry.begin) by_offset.push_back(&entry);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const HeaderEntry& previous = *by_offset[i - 1];
    const HeaderEntry& current = *by_offset[i];
    if (current.begin < previous.end) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor \"", current.view.name, "\" bytes [", current.begin, ", ",
                       current.end, ") overlap tensor \"", previous.view.name, "\" bytes [",
                       previous.begin, ", ", previous.end, ")"));
    }
  }
  return entries;  // nlohmann's object iterates in key order, so already sorted by name
}

}  // namespace

int64_t TensorView::num_elements() const {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;  // validated against overflow when parsed
  return count;
}

// A read-only private mapping of one whole file, unmapped on destruction.
struct WeightFile::MappedFile {
  std::string path;
  void* address = nullptr;
  size_t size = 0;

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (address != nullptr) munmap(address, size);
  }

  absl::Span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(address), size};
  }

  static absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::filesystem::path& path) {
    auto mapped = std::make_unique<MappedFile>();
    mapped->path = path.string();
    // O_NONBLOCK: a FIFO is refused below instead of waiting for a writer forever.
    const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(mapped->path, ": cannot open"));
    struct stat info;
    if (fstat(fd, &info) != 0) {
      const int error_number = errno;
      close(fd);
      return absl::ErrnoToStatus(error_number, absl::StrCat(mapped->path, ": cannot stat"));
    }
    if (!S_ISREG(info.st_mode)) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(mapped->path, ": not a regular file"));
    }
    mapped->size = static_cast<size_t>(info.st_size);
    if (mapped->size == 0) {  // nothing to map; ParseSafetensors reports the short file
      close(fd);
      return mapped;
    }
    void* address = mmap(nullptr, mapped->size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int error_number = errno;
    close(fd);  // the mapping keeps its own reference to the file
    if (address == MAP_FAILED) {
      return absl::ErrnoToStatus(error_number, absl::StrCat(mapped->path, ": cannot mmap"));
    }
    mapped->address = address;
    return mapped;
  }
};

absl::StatusOr<std::vector<TensorView>> ParseSafetensorsHeader(absl::string_view header_json,
                                                               size_t data_size,
                                                               absl::string_view file) {
  HGRN2_ASSIGN_OR_RETURN(std::vector<HeaderEntry> entries,
                         ParseHeaderEntries(header_json, data_size, file));
  std::vector<TensorView> views;
  views.reserve(entries.size());
  for (HeaderEntry& entry : entries) views.push_back(std::move(entry.view));
  return views;
}

absl::StatusOr<std::vector<TensorView>> ParseSafetensors(absl::Span<const std::byte> file_bytes,
                                                         absl::string_view file_name) {
  const absl::string_view file = file_name;
  if (file_bytes.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": file is ", file_bytes.size(),
                     " bytes, shorter than the 8-byte safetensors header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) {  // little-endian, whatever the host
    header_size = (header_size << 8) | std::to_integer<uint64_t>(file_bytes[i]);
  }
  const uint64_t available = file_bytes.size() - 8;
  if (header_size > available) {
    return absl::DataLossError(absl::StrCat(file, ": header length ", header_size,
                                            " runs past the end of the file (", available,
                                            " bytes after the length): the file is truncated"));
  }
  if (header_size > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": header length ", header_size,
                                                   " exceeds the limit of ", kMaxHeaderBytes));
  }
  const absl::string_view header(reinterpret_cast<const char*>(file_bytes.data()) + 8,
                                 static_cast<size_t>(header_size));
  const absl::Span<const std::byte> data = file_bytes.subspan(8 + header_size);
  HGRN2_ASSIGN_OR_RETURN(std::vector<HeaderEntry> entries,
                         ParseHeaderEntries(header, data.size(), file));
  std::vector<TensorView> views;
  views.reserve(entries.size());
  for (HeaderEntry& entry : entries) {
    entry.view.bytes = data.subspan(entry.begin, entry.end - entry.begin);
    views.push_back(std::move(entry.view));
  }
  return views;
}

WeightFile::WeightFile(WeightFile&&) noexcept = default;
WeightFile& WeightFile::operator=(WeightFile&&) noexcept = default;
WeightFile::~WeightFile() = default;

absl::Status WeightFile::AddFile(const std::filesystem::path& path) {
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Map(path));
  HGRN2_ASSIGN_OR_RETURN(std::vector<TensorView> views,
                         ParseSafetensors(mapped->bytes(), mapped->path));
  for (TensorView& view : views) {
    const auto existing = tensors_.find(view.name);
    if (existing != tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", view.name, "\" appears in both ",
                                                     existing->second.file, " and ", view.file));
    }
    std::string name = view.name;
    tensors_.emplace(std::move(name), std::move(view));
  }
  files_.push_back(std::move(mapped));
  return absl::OkStatus();
}

absl::Status WeightFile::AddShardsOfIndex(const std::filesystem::path& index_path) {
  const std::string index_name = index_path.string();
  HGRN2_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(index_path));
  const Json index = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(index_name, ": not valid JSON"));
  }
  if (!index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_name, ": must be a JSON object"));
  }
  const auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_name, ": \"weight_map\" must be a JSON object of tensor -> shard file"));
  }

  // Shard names are plain file names beside the index: a path would let an index reach files
  // outside the checkpoint.
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard_json] : map_it->items()) {
    if (!shard_json.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_name, ": tensor \"", tensor,
                                                     "\": shard must be a file name string, got ",
                                                     Excerpt(shard_json)));
    }
    const std::string& shard = shard_json.get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(index_name, ": tensor \"", tensor,
                                                     "\": shard \"", shard,
                                                     "\" is not a file name in the same folder"));
    }
    tensors_by_shard[shard].push_back(tensor);
  }

  const std::filesystem::path folder = index_path.parent_path();
  for (const auto& [shard, names] : tensors_by_shard) {
    const std::filesystem::path shard_path = folder / shard;
    std::error_code error;
    if (!std::filesystem::exists(shard_path, error)) {
      return absl::NotFoundError(absl::StrCat(index_name, ": shard \"", shard, "\" (named for \"",
                                              names.front(), "\") does not exist at ",
                                              shard_path.string()));
    }
    HGRN2_RETURN_IF_ERROR(AddFile(shard_path));
    for (const std::string& name : names) {
      const auto found = tensors_.find(name);
      if (found == tensors_.end() || found->second.file != shard_path.string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_name, ": tensor \"", name, "\" is not in its shard ", shard_path.string()));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<WeightFile> WeightFile::Open(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::path target = path;
  bool is_index = false;
  if (std::filesystem::is_directory(path, error)) {
    if (std::filesystem::exists(path / kIndexFileName, error)) {
      target = path / kIndexFileName;
      is_index = true;
    } else if (std::filesystem::exists(path / kSingleFileName, error)) {
      target = path / kSingleFileName;
    } else {
      return absl::NotFoundError(absl::StrCat(path.string(), ": folder holds neither ",
                                              kSingleFileName, " nor ", kIndexFileName));
    }
  } else {
    if (!std::filesystem::exists(path, error)) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file or folder"));
    }
    is_index = path.extension() == ".json";
  }

  WeightFile weights;
  weights.source_ = target.string();
  HGRN2_RETURN_IF_ERROR(is_index ? weights.AddShardsOfIndex(target) : weights.AddFile(target));
  return weights;
}

absl::StatusOr<TensorView> WeightFile::Tensor(absl::string_view name) const {
  const auto found = tensors_.find(name);
  if (found == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in ", source_));
  }
  return found->second;
}

bool WeightFile::Contains(absl::string_view name) const { return tensors_.contains(name); }

std::vector<std::string> WeightFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<std::vector<float>> WeightFile::ReadFloat(
    absl::string_view name, absl::Span<const int64_t> expected_shape) const {
  HGRN2_ASSIGN_OR_RETURN(const TensorView view, Tensor(name));
  if (!std::equal(view.shape.begin(), view.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", view.name,
                                                   "\" has shape ", ShapeString(view.shape),
                                                   ", expected ", ShapeString(expected_shape)));
  }
  switch (view.dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF64:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", view.name,
                                                     "\" has dtype ", DTypeName(view.dtype),
                                                     ", expected F32, F16, BF16 or F64"));
  }
  std::vector<float> values(static_cast<size_t>(view.num_elements()));
  HGRN2_RETURN_IF_ERROR(
      ConvertToFloat(view.dtype, view.bytes.data(), values.size(), values.data()));
  return values;
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              absl::Span<const TensorToWrite> tensors) {
  const std::string file = path.string();
  Json header = Json::object();
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    if (tensor.name == "__metadata__" || header.contains(tensor.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor name \"", tensor.name, "\" is reserved or given twice"));
    }
    uint64_t needed = DTypeSize(tensor.dtype);
    bool overflow = false;
    for (const int64_t dim : tensor.shape) {
      if (dim < 0) {
        return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", tensor.name,
                                                       "\": negative dimension in shape ",
                                                       ShapeString(tensor.shape)));
      }
      overflow |= __builtin_mul_overflow(needed, static_cast<uint64_t>(dim), &needed);
    }
    if (overflow || needed != tensor.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": tensor \"", tensor.name, "\": ", tensor.bytes.size(), " bytes given for ",
          DTypeName(tensor.dtype), " ", ShapeString(tensor.shape)));
    }
    header[tensor.name] = {{"dtype", std::string(DTypeName(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.bytes.size()}}};
    offset += tensor.bytes.size();
  }

  std::string header_text;
  try {  // dump throws on names that are not valid UTF-8
    header_text = header.dump();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": cannot encode the header: ", e.what()));
  }
  // Pad with spaces to a multiple of 8 so that the data section starts aligned, as the
  // reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) {
    prefix[i] = static_cast<char>((static_cast<uint64_t>(header_text.size()) >> (8 * i)) & 0xff);
  }

  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", file));
  auto write_all = [fd](const void* data, size_t size) {
    const char* cursor = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = write(fd, cursor, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      cursor += n;
      size -= static_cast<size_t>(n);
    }
    return true;
  };
  bool ok =
      write_all(prefix.data(), prefix.size()) && write_all(header_text.data(), header_text.size());
  for (const TensorToWrite& tensor : tensors) {
    if (!ok) break;
    ok = write_all(tensor.bytes.data(), tensor.bytes.size());
  }
  const int write_errno = errno;
  if (close(fd) != 0 && ok) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", file));
  }
  if (!ok) return absl::ErrnoToStatus(write_errno, absl::StrCat("cannot write ", file));
  return absl::OkStatus();
}

}  // namespace hgrn2

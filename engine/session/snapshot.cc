// Snapshot serialization and parsing: the fixed little-endian header of versions 1 and 2, its
// checks, and the XXH3-64 checksums of header and payload.
#include "engine/session/snapshot.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "xxhash.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace hgrn2::session {
namespace {

// PNG-style: a high byte (caught by 7-bit channels) and a newline (caught by text-mode transfers).
constexpr char kMagic[8] = {'\x89', 'H', 'G', 'R', 'N', '2', 'S', '\n'};

// Field offsets of the header (docs/snapshot-format.md); version 2 adds the revision.
constexpr size_t kVersionAt = 8;
constexpr size_t kHeaderBytesAt = 12;
constexpr size_t kFingerprintAt = 16;
constexpr size_t kDTypeAt = 32;
constexpr size_t kDimsAt = 36;  // six u32: layers, heads, dk, dv, conv channels, conv width
constexpr size_t kPayloadBytesAt = 64;
constexpr size_t kNumTokensAt = 72;
constexpr size_t kPendingTokenAt = 80;
constexpr size_t kSavedAtAt = 88;
constexpr size_t kPayloadChecksumAt = 96;
constexpr size_t kRevisionAt = kSnapshotRevisionAt;
constexpr size_t kHeaderChecksumAt = 120;
// Bytes that must be zero (room for later fields): [begin, end). In version 1 the revision's
// bytes are reserved too.
constexpr std::pair<size_t, size_t> kReserved[] = {{33, 36}, {60, 64}, {84, 88}, {112, 120}};
constexpr uint32_t kVersionWithoutRevision = 1;

constexpr uint8_t kDTypeF32 = 1;
constexpr uint8_t kDTypeBF16 = 2;

void PutU32(char* at, uint32_t value) {
  for (int i = 0; i < 4; ++i) at[i] = static_cast<char>(value >> (8 * i));
}
void PutU64(char* at, uint64_t value) {
  for (int i = 0; i < 8; ++i) at[i] = static_cast<char>(value >> (8 * i));
}
uint32_t GetU32(const char* at) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i)
    value |= static_cast<uint32_t>(static_cast<uint8_t>(at[i])) << (8 * i);
  return value;
}
uint64_t GetU64(const char* at) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value |= static_cast<uint64_t>(static_cast<uint8_t>(at[i])) << (8 * i);
  return value;
}

// StatePool's slot size for `layout`, or nullopt when it overflows 64 bits (a corrupt header).
std::optional<uint64_t> CheckedStateBytes(const StateLayout& layout) {
  uint64_t elements = 1;
  for (int64_t extent : {layout.num_layers, layout.num_heads, layout.key_dim, layout.value_dim}) {
    if (extent < 0 || __builtin_mul_overflow(elements, static_cast<uint64_t>(extent), &elements)) {
      return std::nullopt;
    }
  }
  uint64_t conv = 0;
  if (layout.conv_channels < 0 || layout.conv_width < 0 || layout.num_layers < 0 ||
      __builtin_mul_overflow(static_cast<uint64_t>(layout.num_layers),
                             static_cast<uint64_t>(layout.conv_channels), &conv) ||
      __builtin_mul_overflow(conv, static_cast<uint64_t>(layout.conv_width), &conv) ||
      __builtin_mul_overflow(conv, uint64_t{4}, &conv)) {
    return std::nullopt;
  }
  uint64_t states = 0;
  if (layout.dtype == DType::kF32) {
    if (__builtin_mul_overflow(elements, uint64_t{4}, &states)) return std::nullopt;
    uint64_t total = 0;
    if (__builtin_add_overflow(states, conv, &total)) return std::nullopt;
    return total;
  }
  // BF16 (StatePool): states padded to 4 bytes, then the f32 windows, the slot padded to 16.
  if (__builtin_mul_overflow(elements, uint64_t{2}, &states) || states > (uint64_t{1} << 62) ||
      conv > (uint64_t{1} << 62)) {
    return std::nullopt;
  }
  states = (states + 3) / 4 * 4;
  return (states + conv + 15) / 16 * 16;
}

// Copies `length` bytes with stores that bypass the cache where the CPU has them (SSE2): a copy
// through the cache first reads each destination line in (write-allocate), a third of the memory
// traffic of a copy too large for the cache. Callers end a series of these with StreamFence().
void StreamCopy(char* dst, const char* src, size_t length) {
#if defined(__SSE2__)
  const size_t head = std::min(length, (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16);
  std::memcpy(dst, src, head);
  size_t i = head;
  for (; i + 64 <= length; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
  }
  std::memcpy(dst + i, src + i, length - i);
#else
  std::memcpy(dst, src, length);
#endif
}

// Orders the streaming stores before what follows (another thread reading the copy).
void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Returns the XXH3-64 of `length` bytes at `src`, handing each chunk to copy_chunk(offset, size)
// first and then hashing it from `src`, which the copy has just brought into the cache: chunks
// that stay in the CPU's cache, so memory sees one read of the source, not one to copy and one to
// hash.
template <typename CopyChunk>
uint64_t HashWhileCopying(const char* src, size_t length, CopyChunk copy_chunk) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hasher(XXH3_createState(),
                                                                  &XXH3_freeState);
  XXH3_64bits_reset(hasher.get());
  constexpr size_t kChunkBytes = size_t{64} << 10;
  for (size_t offset = 0; offset < length; offset += kChunkBytes) {
    const size_t chunk = std::min(kChunkBytes, length - offset);
    copy_chunk(offset, chunk);
    XXH3_64bits_update(hasher.get(), src + offset, chunk);
  }
  return XXH3_64bits_digest(hasher.get());
}

// Copies `length` bytes to `dst` with streaming stores and returns their XXH3-64, in one pass.
uint64_t CopyAndHash(char* dst, const char* src, size_t length) {
  const uint64_t hash = HashWhileCopying(src, length, [&](size_t offset, size_t chunk) {
    StreamCopy(dst + offset, src + offset, chunk);
  });
  StreamFence();
  return hash;
}

absl::Status Truncated(size_t have, size_t need, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("snapshot truncated: ", have, " bytes, ", what, " has ", need));
}

absl::Status CorruptHeader(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("snapshot header is corrupt: ", why));
}

}  // namespace

StateLayout StateLayout::For(const ModelConfig& config, DType state_dtype) {
  StateLayout layout;
  layout.dtype = state_dtype;
  layout.num_layers = config.num_layers;
  layout.num_heads = config.num_heads;
  layout.key_dim = config.key_dim;
  layout.value_dim = config.value_dim;
  layout.conv_channels = config.use_short_conv ? 3 * config.hidden_size : 0;
  layout.conv_width = config.conv_window();
  return layout;
}

uint64_t StateLayout::state_bytes() const { return CheckedStateBytes(*this).value_or(0); }

std::string StateLayout::ToString() const {
  return absl::StrFormat("%s states, %d layers x %d heads x %d dk x %d dv, conv %dx%d",
                         StateDTypeName(dtype), num_layers, num_heads, key_dim, value_dim,
                         conv_channels, conv_width);
}

std::string StateDTypeName(DType dtype) {
  if (dtype == DType::kF32) return "f32";
  if (dtype == DType::kBF16) return "bf16";
  return std::string(DTypeName(dtype));
}

std::string Serialize(const Snapshot& snapshot) {
  return Serialize(snapshot.model_fingerprint, snapshot.layout, snapshot.num_tokens,
                   snapshot.saved_at, snapshot.state.pending_token, snapshot.state.view(),
                   snapshot.revision);
}

std::string Serialize(const ModelFingerprint& model_fingerprint, const StateLayout& layout,
                      uint64_t num_tokens, absl::Time saved_at, int32_t pending_token,
                      absl::Span<const std::byte> state, uint64_t revision) {
  std::string out;
  SerializeInto(out, model_fingerprint, layout, num_tokens, saved_at, pending_token, state,
                revision);
  return out;
}

void SerializeInto(std::string& out, const ModelFingerprint& model_fingerprint,
                   const StateLayout& layout, uint64_t num_tokens, absl::Time saved_at,
                   int32_t pending_token, absl::Span<const std::byte> state, uint64_t revision) {
  char h[kSnapshotHeaderBytes] = {};
  std::memcpy(h, kMagic, sizeof(kMagic));
  PutU32(h + kVersionAt, revision == 0 ? kVersionWithoutRevision : kSnapshotFormatVersion);
  PutU64(h + kRevisionAt, revision);
  PutU32(h + kHeaderBytesAt, kSnapshotHeaderBytes);
  std::memcpy(h + kFingerprintAt, model_fingerprint.bytes, sizeof(model_fingerprint.bytes));
  h[kDTypeAt] = static_cast<char>(layout.dtype == DType::kBF16  ? kDTypeBF16
                                  : layout.dtype == DType::kF32 ? kDTypeF32
                                                                : 0);
  const int64_t dims[] = {layout.num_layers, layout.num_heads,     layout.key_dim,
                          layout.value_dim,  layout.conv_channels, layout.conv_width};
  for (size_t i = 0; i < 6; ++i) PutU32(h + kDimsAt + 4 * i, static_cast<uint32_t>(dims[i]));
  PutU64(h + kPayloadBytesAt, state.size());
  PutU64(h + kNumTokensAt, num_tokens);
  PutU32(h + kPendingTokenAt, static_cast<uint32_t>(pending_token));
  PutU64(h + kSavedAtAt, static_cast<uint64_t>(absl::ToUnixMicros(saved_at)));
  // The payload is copied and hashed in one pass over the state in memory (CopyAndHash). `out`
  // is written in place when it already has the snapshot's size (a recycled SnapshotBuffer);
  // otherwise it is sized by appending the header and reserving, not by resizing, so that it is
  // not zeroed first, and the payload appended through the cache.
  const size_t total = kSnapshotHeaderBytes + state.size();
  const char* source = reinterpret_cast<const char*>(state.data());
  uint64_t payload_checksum = 0;
  if (out.size() == total) {
    payload_checksum = CopyAndHash(out.data() + kSnapshotHeaderBytes, source, state.size());
  } else {
    out.clear();
    out.reserve(total);
    out.append(kSnapshotHeaderBytes, '\0');
    payload_checksum = HashWhileCopying(source, state.size(), [&](size_t offset, size_t chunk) {
      out.append(source + offset, chunk);
    });
  }
  PutU64(h + kPayloadChecksumAt, payload_checksum);
  PutU64(h + kHeaderChecksumAt, XXH3_64bits(h, kHeaderChecksumAt));
  std::memcpy(out.data(), h, kSnapshotHeaderBytes);
}

absl::Status SetRevision(std::string& snapshot, uint64_t revision) {
  absl::StatusOr<SnapshotHeader> header = ParseHeader(snapshot);
  if (!header.ok()) return header.status();
  char* h = snapshot.data();
  PutU32(h + kVersionAt, revision == 0 ? kVersionWithoutRevision : kSnapshotFormatVersion);
  PutU64(h + kRevisionAt, revision);
  PutU64(h + kHeaderChecksumAt, XXH3_64bits(h, kHeaderChecksumAt));
  return absl::OkStatus();
}

absl::StatusOr<SnapshotHeader> ParseHeader(absl::string_view bytes) {
  const size_t magic_bytes = std::min(bytes.size(), sizeof(kMagic));
  if (magic_bytes > 0 && std::memcmp(bytes.data(), kMagic, magic_bytes) != 0) {
    return absl::InvalidArgumentError(
        "not an hgrn2 session snapshot (its first bytes are not the snapshot magic)");
  }
  if (bytes.size() < kHeaderBytesAt + 4) {
    return Truncated(bytes.size(), kSnapshotHeaderBytes, "a header");
  }
  SnapshotHeader header;
  const char* h = bytes.data();
  header.format_version = GetU32(h + kVersionAt);
  if (header.format_version != kVersionWithoutRevision &&
      header.format_version != kSnapshotFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot format version ", header.format_version,
                     " is not supported (this build reads versions ", kVersionWithoutRevision,
                     " and ", kSnapshotFormatVersion, ")"));
  }
  header.header_bytes = GetU32(h + kHeaderBytesAt);
  if (header.header_bytes != kSnapshotHeaderBytes) {
    return CorruptHeader(absl::StrCat("header length ", header.header_bytes, ", version ",
                                      header.format_version, " headers have ",
                                      kSnapshotHeaderBytes));
  }
  if (bytes.size() < kSnapshotHeaderBytes) {
    return Truncated(bytes.size(), kSnapshotHeaderBytes, "a header");
  }
  header.header_checksum = GetU64(h + kHeaderChecksumAt);
  const uint64_t computed = XXH3_64bits(h, kHeaderChecksumAt);
  if (computed != header.header_checksum) {
    return CorruptHeader(absl::StrFormat("checksum %016x, the header's bytes give %016x",
                                         header.header_checksum, computed));
  }
  // The checksum matched, so what follows catches a writer's bugs, not transmission errors.
  for (const auto& [begin, end] : kReserved) {
    for (size_t i = begin; i < end; ++i) {
      if (h[i] != 0) return CorruptHeader(absl::StrCat("reserved byte ", i, " is not zero"));
    }
  }
  header.revision = GetU64(h + kRevisionAt);
  if (header.format_version == kVersionWithoutRevision && header.revision != 0) {
    return CorruptHeader(absl::StrCat("reserved bytes ", kRevisionAt, "..", kRevisionAt + 7,
                                      " are not zero (version 1 has no revision)"));
  }
  // Revision 0 is written as version 1, so that each snapshot has one serialization.
  if (header.format_version != kVersionWithoutRevision && header.revision == 0) {
    return CorruptHeader(absl::StrCat("version ", header.format_version, " with revision 0"));
  }
  std::memcpy(header.model_fingerprint.bytes, h + kFingerprintAt,
              sizeof(header.model_fingerprint.bytes));
  const uint8_t dtype = static_cast<uint8_t>(h[kDTypeAt]);
  if (dtype == kDTypeF32) {
    header.layout.dtype = DType::kF32;
  } else if (dtype == kDTypeBF16) {
    header.layout.dtype = DType::kBF16;
  } else {
    return CorruptHeader(absl::StrCat("unknown state dtype code ", dtype));
  }
  int64_t* dims[] = {&header.layout.num_layers,    &header.layout.num_heads,
                     &header.layout.key_dim,       &header.layout.value_dim,
                     &header.layout.conv_channels, &header.layout.conv_width};
  for (size_t i = 0; i < 6; ++i) *dims[i] = GetU32(h + kDimsAt + 4 * i);
  if (header.layout.num_layers == 0 || header.layout.num_heads == 0 || header.layout.key_dim == 0 ||
      header.layout.value_dim == 0 ||
      (header.layout.conv_channels == 0) != (header.layout.conv_width == 0)) {
    return CorruptHeader(absl::StrCat("impossible state layout: ", header.layout.ToString()));
  }
  header.payload_bytes = GetU64(h + kPayloadBytesAt);
  const std::optional<uint64_t> layout_bytes = CheckedStateBytes(header.layout);
  if (!layout_bytes.has_value() || *layout_bytes != header.payload_bytes ||
      header.payload_bytes > (uint64_t{1} << 48)) {
    return CorruptHeader(absl::StrCat("payload of ", header.payload_bytes,
                                      " bytes for a state layout of ", layout_bytes.value_or(0),
                                      " (", header.layout.ToString(), ")"));
  }
  header.num_tokens = GetU64(h + kNumTokensAt);
  header.pending_token = static_cast<int32_t>(GetU32(h + kPendingTokenAt));
  if (header.pending_token < 0) {
    return CorruptHeader(absl::StrCat("negative pending token ", header.pending_token));
  }
  header.saved_at = absl::FromUnixMicros(static_cast<int64_t>(GetU64(h + kSavedAtAt)));
  header.payload_checksum = GetU64(h + kPayloadChecksumAt);
  return header;
}

namespace {

// ParseView's checks but the payload's checksum: the header, the model, the layout, the size.
absl::StatusOr<SnapshotHeader> CheckAllButPayload(absl::string_view bytes,
                                                  const SnapshotExpectation& expected) {
  absl::StatusOr<SnapshotHeader> header = ParseHeader(bytes);
  if (!header.ok()) return header.status();
  if (header->model_fingerprint != expected.model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot is of model ", header->model_fingerprint.ToHex(),
                     ", this server runs model ", expected.model_fingerprint.ToHex()));
  }
  if (header->layout != expected.layout) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot state layout (", header->layout.ToString(),
                     ") differs from this server's (", expected.layout.ToString(), ")"));
  }
  const uint64_t total = header->total_bytes();
  if (bytes.size() < total) return Truncated(bytes.size(), total, "the snapshot");
  if (bytes.size() > total) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot has ", bytes.size() - total, " trailing bytes after its ", total));
  }
  return header;
}

absl::Status CheckPayloadChecksum(const SnapshotHeader& header, uint64_t computed) {
  if (computed == header.payload_checksum) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("snapshot payload is corrupt: checksum %016x, its bytes give %016x",
                      header.payload_checksum, computed));
}

}  // namespace

absl::StatusOr<SnapshotView> ParseView(absl::string_view bytes,
                                       const SnapshotExpectation& expected) {
  absl::StatusOr<SnapshotHeader> header = CheckAllButPayload(bytes, expected);
  if (!header.ok()) return header.status();
  SnapshotView view;
  view.payload = bytes.substr(header->header_bytes);
  HGRN2_RETURN_IF_ERROR(
      CheckPayloadChecksum(*header, XXH3_64bits(view.payload.data(), view.payload.size())));
  view.header = *header;
  return view;
}

absl::StatusOr<SnapshotHeader> ParseInto(absl::string_view bytes,
                                         const SnapshotExpectation& expected,
                                         absl::Span<std::byte> payload_out) {
  absl::StatusOr<SnapshotHeader> header = CheckAllButPayload(bytes, expected);
  if (!header.ok()) return header.status();
  if (payload_out.size() != header->payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot payload of ", header->payload_bytes,
                                                   " bytes, the buffer given for it has ",
                                                   payload_out.size()));
  }
  // As SerializeInto: copied and hashed in one pass over the payload in memory.
  const uint64_t computed = CopyAndHash(reinterpret_cast<char*>(payload_out.data()),
                                        bytes.data() + header->header_bytes, payload_out.size());
  HGRN2_RETURN_IF_ERROR(CheckPayloadChecksum(*header, computed));
  return header;
}

absl::StatusOr<Snapshot> Parse(absl::string_view bytes, const SnapshotExpectation& expected) {
  absl::StatusOr<SnapshotView> view = ParseView(bytes, expected);
  if (!view.ok()) return view.status();
  Snapshot snapshot;
  snapshot.model_fingerprint = view->header.model_fingerprint;
  snapshot.layout = view->header.layout;
  snapshot.num_tokens = view->header.num_tokens;
  snapshot.saved_at = view->header.saved_at;
  snapshot.revision = view->header.revision;
  CopyState(*view, snapshot.state);
  return snapshot;
}

void CopyState(const SnapshotView& view, SequenceState& state) {
  state.pending_token = view.header.pending_token;
  const auto* payload = reinterpret_cast<const std::byte*>(view.payload.data());
  if (state.pinned_lease != nullptr && state.pinned.size() == view.payload.size()) {
    std::memcpy(state.pinned.data(), payload, view.payload.size());
    return;
  }
  state.pinned = {};
  state.pinned_lease.reset();
  state.bytes.assign(payload, payload + view.payload.size());
}

}  // namespace hgrn2::session

// The session snapshot format: one sequence's state with the model fingerprint, serialized and
// checked (the byte layout is docs/snapshot-format.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/base/dtype.h"
#include "engine/checkpoint/fingerprint.h"
#include "engine/checkpoint/model_config.h"
#include "engine/scheduler/request.h"

namespace hgrn2::session {

// The newest format this build reads and writes: version 2 adds the revision to version 1.
// Version 1 is read as revision 0, and a snapshot of revision 0 (one no store has given a
// revision) is still written as version 1, so its bytes are those of builds before revisions.
inline constexpr uint32_t kSnapshotFormatVersion = 2;
// Bytes of a header (versions 1 and 2); the state payload follows it.
inline constexpr size_t kSnapshotHeaderBytes = 128;
// Where the revision lies in a header (docs/snapshot-format.md): stores compare these bytes.
inline constexpr size_t kSnapshotRevisionAt = 104;

// The shape of one StatePool slot: what a snapshot's payload must match to be written into a
// pool. Equal layouts have equal state_bytes().
struct StateLayout {
  DType dtype = DType::kF32;  // of the recurrent states: kF32 or kBF16 (conv windows are f32)
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t key_dim = 0;
  int64_t value_dim = 0;
  int64_t conv_channels = 0;  // 3·D with short convolutions, else 0
  int64_t conv_width = 0;     // K with short convolutions, else 0

  // The layout of StatePool::Create(backend, config, n, state_dtype)'s slots.
  static StateLayout For(const ModelConfig& config, DType state_dtype);
  // Bytes of one slot, padding included: StatePool::slot_bytes() for this layout.
  uint64_t state_bytes() const;
  // For error messages: "f32 states, 24 layers x 16 heads x 128 dk x 128 dv, conv 0x0".
  std::string ToString() const;

  friend bool operator==(const StateLayout&, const StateLayout&) = default;
};

// "f32" or "bf16" (the names sessions.proto reports); the dtype's own name otherwise.
std::string StateDTypeName(DType dtype);

// A session as the engine gives and takes it.
struct Snapshot {
  ModelFingerprint model_fingerprint;
  StateLayout layout;
  // Tokens the session has read and written, the pending one included.
  uint64_t num_tokens = 0;
  absl::Time saved_at = absl::UnixEpoch();  // stored in whole microseconds
  // Which save of its session this is: 1 for the first, +1 for each later one (a store sets it;
  // 0 for a snapshot no store has kept).
  uint64_t revision = 0;
  // bytes: layout.state_bytes() of them, in the pool's layout; pending_token: not yet fed.
  SequenceState state;
};

// Everything a snapshot's header says. ParseHeader fills it from the header bytes alone.
struct SnapshotHeader {
  uint32_t format_version = kSnapshotFormatVersion;
  uint32_t header_bytes = kSnapshotHeaderBytes;
  ModelFingerprint model_fingerprint;
  StateLayout layout;
  uint64_t payload_bytes = 0;  // == layout.state_bytes()
  uint64_t num_tokens = 0;
  int32_t pending_token = 0;
  absl::Time saved_at = absl::UnixEpoch();
  uint64_t revision = 0;          // Snapshot::revision (0 in version 1)
  uint64_t payload_checksum = 0;  // XXH3-64 of the payload
  uint64_t header_checksum = 0;   // XXH3-64 of the header before it: identifies the snapshot

  // The whole snapshot's size: header and payload.
  uint64_t total_bytes() const { return header_bytes + payload_bytes; }
};

// What the serving engine can resume: Parse refuses any other model or layout.
struct SnapshotExpectation {
  ModelFingerprint model_fingerprint;
  StateLayout layout;
};

// A parsed snapshot whose payload still lies in the bytes given to ParseView (no copy).
struct SnapshotView {
  SnapshotHeader header;
  absl::string_view payload;  // header.payload_bytes bytes: SequenceState::bytes
};

// The view's state (its payload and pending token) copied into `state`: into its pinned memory
// when it has a lease of the payload's size, else into its bytes (reusing their memory).
void CopyState(const SnapshotView& view, SequenceState& state);

// The snapshot's bytes. `snapshot.state.bytes` should hold layout.state_bytes() bytes; Parse
// refuses a snapshot whose payload size differs from its layout's.
std::string Serialize(const Snapshot& snapshot);
// The same from a state that is not in a Snapshot (no copy of it first).
std::string Serialize(const ModelFingerprint& model_fingerprint, const StateLayout& layout,
                      uint64_t num_tokens, absl::Time saved_at, int32_t pending_token,
                      absl::Span<const std::byte> state, uint64_t revision = 0);

// The same into `out`, replacing what it held; its memory is reused when it has room (a recycled
// buffer is written warm, a fresh one faults in a page at a time). When `out` already has the
// snapshot's size (a recycled SnapshotBuffer), it is overwritten in place with streaming stores:
// one read of the state and one write of `out` in memory, no zeroing.
void SerializeInto(std::string& out, const ModelFingerprint& model_fingerprint,
                   const StateLayout& layout, uint64_t num_tokens, absl::Time saved_at,
                   int32_t pending_token, absl::Span<const std::byte> state, uint64_t revision = 0);

// A serialized snapshot's bytes as a Recycler<SnapshotBuffer> keeps them: not cleared when given
// back, so that SerializeInto writes the next snapshot of the same size over them in place.
struct SnapshotBuffer {
  std::string bytes;
  void Clear() {}  // the bytes are overwritten whole by the next SerializeInto
};

// Gives the serialized `snapshot` another revision in place: the header's version, revision and
// checksum are rewritten, the payload is not touched. ParseHeader's errors for a header that does
// not parse (nothing is changed then).
absl::Status SetRevision(std::string& snapshot, uint64_t revision);

// Reads and checks the header at the front of `bytes` (which may stop right after it: stores list
// sessions from the header alone). Checks the magic, the version, the header checksum and that
// the fields are consistent; not the payload. Errors, all INVALID_ARGUMENT:
//   "not an hgrn2 session snapshot" (wrong magic), "snapshot format version N is not supported
//   (this build reads versions 1 and 2)", "snapshot truncated: ..." (fewer bytes than a header),
//   "snapshot header is corrupt: ..." (checksum mismatch, unknown dtype, bad sizes, a version-2
//   revision of 0).
absl::StatusOr<SnapshotHeader> ParseHeader(absl::string_view bytes);

// Checks the whole snapshot against `expected` and returns it, its payload pointing into `bytes`.
// ParseHeader's errors, then:
//   FAILED_PRECONDITION "snapshot is of model <hex>, this server runs model <hex>";
//   FAILED_PRECONDITION "snapshot state layout ... differs from this server's ...";
//   INVALID_ARGUMENT "snapshot truncated: N bytes of M" / "snapshot has N trailing bytes ...";
//   INVALID_ARGUMENT "snapshot payload is corrupt: checksum ...".
// Corruption is INVALID_ARGUMENT, not DATA_LOSS: a snapshot is input from a client or a store,
// and sessions.proto promises INVALID_ARGUMENT for one that is corrupt.
absl::StatusOr<SnapshotView> ParseView(absl::string_view bytes,
                                       const SnapshotExpectation& expected);

// ParseView's checks, with the payload copied into `payload_out` (header.payload_bytes bytes, else
// INVALID_ARGUMENT) as it is checksummed: one pass over the payload, where ParseView and a copy
// make two. Returns the header; on an error `payload_out` may hold part of the payload.
absl::StatusOr<SnapshotHeader> ParseInto(absl::string_view bytes,
                                         const SnapshotExpectation& expected,
                                         absl::Span<std::byte> payload_out);

// ParseView, with the payload copied into the returned Snapshot. On error nothing is returned.
absl::StatusOr<Snapshot> Parse(absl::string_view bytes, const SnapshotExpectation& expected);

}  // namespace hgrn2::session

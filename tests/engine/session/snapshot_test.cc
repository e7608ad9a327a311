// Model fingerprints and the snapshot format: round trips, every refusal with its code and
// message, a flipped byte at every offset, truncation at every length.
#include "engine/session/snapshot.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/checkpoint/fingerprint.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/session_test_support.h"
#include "tests/support/test_support.h"
#include "xxhash.h"

namespace hgrn2::session {
namespace {

namespace fs = std::filesystem;
using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::TestExpectation;
using ::hgrn2::testing::TestSnapshot;
using ::hgrn2::testing::TestSnapshotBytes;

ModelFingerprint FingerprintOf(const fs::path& dir) {
  absl::StatusOr<ModelConfig> config = ModelConfig::Load(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir);
  EXPECT_TRUE(weights.ok()) << weights.status();
  return FingerprintCheckpoint(*config, *weights);
}

fs::path CopyModel(const std::string& name) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / name;
  fs::copy(hgrn2::testing::TestDataDir() / name, dir, fs::copy_options::recursive);
  return dir;
}

TEST(ModelFingerprint, SameFolderTwiceGivesTheSameValue) {
  const fs::path dir = hgrn2::testing::TestDataDir() / "tiny-a";
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Model>> first = Model::Load(dir, *backend);
  absl::StatusOr<std::unique_ptr<Model>> second = Model::Load(CopyModel("tiny-a"), *backend);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->fingerprint(), (*second)->fingerprint());
  EXPECT_EQ((*first)->fingerprint(), FingerprintOf(dir));
  EXPECT_EQ((*first)->fingerprint().ToHex().size(), 32u);
  EXPECT_NE((*first)->fingerprint(), FingerprintOf(hgrn2::testing::TestDataDir() / "tiny-conv"));
}

TEST(ModelFingerprint, OneWeightByteChangesIt) {
  const ModelFingerprint original = FingerprintOf(hgrn2::testing::TestDataDir() / "tiny-a");
  const fs::path dir = CopyModel("tiny-a");
  const fs::path weights = dir / "model.safetensors";
  std::fstream file(weights, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(-1, std::ios::end);
  char last = 0;
  file.read(&last, 1);
  file.seekp(-1, std::ios::end);
  last ^= 1;
  file.write(&last, 1);
  file.close();
  EXPECT_NE(FingerprintOf(dir), original);
}

TEST(ModelFingerprint, ConfigChangesChangeIt) {
  const fs::path original_dir = hgrn2::testing::TestDataDir() / "tiny-a";
  const ModelFingerprint original = FingerprintOf(original_dir);
  std::ifstream in(original_dir / "config.json");
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Formatting alone does not change it (the parsed fields are hashed, not the text) ...
  fs::path dir = CopyModel("tiny-a");
  hgrn2::testing::WriteFile(dir / "config.json", json + "\n\n");
  EXPECT_EQ(FingerprintOf(dir), original);
  // ... a field does.
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"\"norm_eps\": 1e-06", "\"norm_eps\": 1e-05"},
        {"\"eos_token_id\": 2", "\"eos_token_id\": 3"}}) {
    std::string changed = json;
    ASSERT_NE(changed.find(from), std::string::npos) << from;
    changed.replace(changed.find(from), from.size(), to);
    dir = CopyModel("tiny-a");
    hgrn2::testing::WriteFile(dir / "config.json", changed);
    EXPECT_NE(FingerprintOf(dir), original) << to;
  }
}

TEST(ModelFingerprint, RandomModelsFollowConfigAndSeed) {
  ModelConfig config;
  config.vocab_size = 16;
  config.hidden_size = 8;
  config.num_layers = 1;
  config.num_heads = 2;
  config.key_dim = 4;
  config.value_dim = 4;
  config.intermediate_size = 8;
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto a = *Model::CreateRandom(config, *backend, 1);
  auto b = *Model::CreateRandom(config, *backend, 1);
  auto c = *Model::CreateRandom(config, *backend, 2);
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_NE(a->fingerprint(), c->fingerprint());
  EXPECT_EQ(a->fingerprint(), FingerprintRandomModel(config, 1));
}

TEST(ModelFingerprint, HexRoundTrip) {
  const ModelFingerprint f = hgrn2::testing::TestFingerprint();
  EXPECT_EQ(f.ToHex(), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  EXPECT_EQ(*ModelFingerprint::FromHex(f.ToHex()), f);
  ExpectError(ModelFingerprint::FromHex("a0a1").status(), absl::StatusCode::kInvalidArgument,
              {"32 hex digits"});
  ExpectError(ModelFingerprint::FromHex(std::string(32, 'g')).status(),
              absl::StatusCode::kInvalidArgument, {"32 hex digits"});
}

TEST(StateLayout, BytesAreTheStatePoolSlotSize) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  for (const char* name : {"tiny-a", "tiny-conv", "u-k3-nolb", "u-dk15-bf16"}) {
    const ModelConfig config = *ModelConfig::Load(hgrn2::testing::TestDataDir() / name);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      auto pool = *StatePool::Create(*backend, config, 1, dtype);
      EXPECT_EQ(StateLayout::For(config, dtype).state_bytes(), pool->slot_bytes())
          << name << " " << DTypeName(dtype);
    }
  }
}

TEST(Snapshot, RoundTrip) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Snapshot snapshot = TestSnapshot(3, dtype);
    const std::string bytes = Serialize(snapshot);
    EXPECT_EQ(bytes.size(), kSnapshotHeaderBytes + snapshot.layout.state_bytes());
    absl::StatusOr<Snapshot> parsed = Parse(bytes, TestExpectation(dtype));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->model_fingerprint, snapshot.model_fingerprint);
    EXPECT_EQ(parsed->layout, snapshot.layout);
    EXPECT_EQ(parsed->num_tokens, snapshot.num_tokens);
    EXPECT_EQ(parsed->saved_at, snapshot.saved_at);
    EXPECT_EQ(parsed->state.pending_token, snapshot.state.pending_token);
    EXPECT_EQ(parsed->state.bytes, snapshot.state.bytes);
    EXPECT_EQ(Serialize(*parsed), bytes);

    absl::StatusOr<SnapshotHeader> header = ParseHeader(bytes.substr(0, kSnapshotHeaderBytes));
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format_version, 1u);  // revision 0: the bytes of version 1
    EXPECT_EQ(header->revision, 0u);
    EXPECT_EQ(header->num_tokens, snapshot.num_tokens);
    EXPECT_EQ(header->total_bytes(), bytes.size());
  }
}

// A revision makes a version-2 header; SetRevision rewrites it (and the header checksum) in place,
// leaving the payload alone, and back to version 1 for revision 0.
TEST(Snapshot, RevisionsRoundTripAndSetRevisionRewritesTheHeader) {
  Snapshot snapshot = TestSnapshot(4);
  snapshot.revision = 0x0102030405060708ull;
  const std::string bytes = Serialize(snapshot);
  EXPECT_EQ(bytes.substr(8, 4), std::string("\x02\0\0\0", 4));
  EXPECT_EQ(bytes.substr(kSnapshotRevisionAt, 8), "\x08\x07\x06\x05\x04\x03\x02\x01");
  absl::StatusOr<Snapshot> parsed = Parse(bytes, TestExpectation());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->revision, snapshot.revision);
  EXPECT_EQ(Serialize(*parsed), bytes);
  EXPECT_EQ(ParseHeader(bytes)->format_version, kSnapshotFormatVersion);

  std::string changed = TestSnapshotBytes(4);
  ASSERT_TRUE(SetRevision(changed, snapshot.revision).ok());
  EXPECT_EQ(changed, bytes);
  ASSERT_TRUE(SetRevision(changed, 7).ok());
  EXPECT_EQ(ParseHeader(changed)->revision, 7u);
  EXPECT_NE(ParseHeader(changed)->header_checksum, ParseHeader(bytes)->header_checksum);
  EXPECT_EQ(changed.substr(kSnapshotHeaderBytes), bytes.substr(kSnapshotHeaderBytes));
  ASSERT_TRUE(SetRevision(changed, 0).ok());
  EXPECT_EQ(changed, TestSnapshotBytes(4));

  std::string garbage = "not a snapshot";
  ExpectError(SetRevision(garbage, 3), absl::StatusCode::kInvalidArgument,
              {"not an hgrn2 session snapshot"});
  EXPECT_EQ(garbage, "not a snapshot");
}

// Each snapshot has one serialization: version 1 with revision bytes, or version 2 with revision 0,
// is refused (even with a matching header checksum).
TEST(Snapshot, RevisionAndVersionMustAgree) {
  auto with_checksum = [](std::string bytes) {
    const uint64_t checksum = XXH3_64bits(bytes.data(), 120);
    std::memcpy(bytes.data() + 120, &checksum, sizeof(checksum));  // little-endian host
    return bytes;
  };
  std::string v1_with_revision = TestSnapshotBytes(1);
  v1_with_revision[kSnapshotRevisionAt] = 1;
  ExpectError(ParseHeader(with_checksum(v1_with_revision)).status(),
              absl::StatusCode::kInvalidArgument,
              {"snapshot header is corrupt", "version 1 has no revision"});
  std::string v2_without = TestSnapshotBytes(1);
  v2_without[8] = 2;
  ExpectError(ParseHeader(with_checksum(v2_without)).status(), absl::StatusCode::kInvalidArgument,
              {"snapshot header is corrupt", "version 2 with revision 0"});
}

TEST(Snapshot, LargePayloadChecksumIsXxh3OfThePayload) {
  // Serialize hashes the payload in 64 KiB chunks while copying it; the stored checksum must be
  // the one-shot XXH3-64 of the whole payload that docs/snapshot-format.md names, for a payload
  // of several chunks and a ragged last one.
  Snapshot snapshot = TestSnapshot(5);
  snapshot.layout.num_layers = 5;
  snapshot.layout.num_heads = 7;
  snapshot.layout.key_dim = 37;
  snapshot.layout.value_dim = 61;
  snapshot.state.bytes.resize(snapshot.layout.state_bytes());
  for (size_t i = 0; i < snapshot.state.bytes.size(); ++i) {
    snapshot.state.bytes[i] = static_cast<std::byte>((i * 2654435761u) >> 13);
  }
  ASSERT_GT(snapshot.state.bytes.size(), size_t{3} << 16);
  ASSERT_NE(snapshot.state.bytes.size() % (size_t{1} << 16), 0u);
  const std::string bytes = Serialize(snapshot);
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + 96, sizeof(stored));  // little-endian host
  EXPECT_EQ(stored, XXH3_64bits(snapshot.state.bytes.data(), snapshot.state.bytes.size()));
  EXPECT_EQ(bytes.substr(kSnapshotHeaderBytes),
            std::string(reinterpret_cast<const char*>(snapshot.state.bytes.data()),
                        snapshot.state.bytes.size()));
  absl::StatusOr<Snapshot> parsed =
      Parse(bytes, SnapshotExpectation{snapshot.model_fingerprint, snapshot.layout});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->state.bytes, snapshot.state.bytes);
  // Into a buffer that already has the size (a recycled SnapshotBuffer, stale bytes in it), the
  // payload is streamed over it in place: the same bytes; into one of another size, too.
  for (size_t size : {bytes.size(), size_t{7}}) {
    std::string out(size, '\x5a');
    SerializeInto(out, snapshot.model_fingerprint, snapshot.layout, snapshot.num_tokens,
                  snapshot.saved_at, snapshot.state.pending_token, snapshot.state.view());
    EXPECT_TRUE(out == bytes) << "into a buffer of " << size << " bytes";
  }
  // ParseInto streams and hashes chunk by chunk too: the same payload, and a flip in the last,
  // ragged chunk is caught.
  const SnapshotExpectation expected{snapshot.model_fingerprint, snapshot.layout};
  std::vector<std::byte> out(snapshot.state.bytes.size());
  ASSERT_TRUE(ParseInto(bytes, expected, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, snapshot.state.bytes);
  std::string bad = bytes;
  bad[bad.size() - 3] ^= 1;
  ExpectError(ParseInto(bad, expected, absl::MakeSpan(out)).status(),
              absl::StatusCode::kInvalidArgument, {"snapshot payload is corrupt: checksum"});
}

TEST(Snapshot, ParseIntoCopiesThePayloadItChecks) {
  const Snapshot snapshot = TestSnapshot(3);
  const std::string bytes = Serialize(snapshot);
  std::vector<std::byte> out(snapshot.state.bytes.size());
  absl::StatusOr<SnapshotHeader> header = ParseInto(bytes, TestExpectation(), absl::MakeSpan(out));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(out, snapshot.state.bytes);
  EXPECT_EQ(header->pending_token, snapshot.state.pending_token);
  EXPECT_EQ(header->num_tokens, snapshot.num_tokens);
  EXPECT_EQ(header->payload_bytes, out.size());

  // ParseView's errors, in the same words.
  std::string bad = bytes;
  bad[kSnapshotHeaderBytes + 10] ^= 0x80;
  ExpectError(ParseInto(bad, TestExpectation(), absl::MakeSpan(out)).status(),
              absl::StatusCode::kInvalidArgument, {"snapshot payload is corrupt: checksum"});
  ExpectError(ParseInto(bytes, TestExpectation(DType::kBF16), absl::MakeSpan(out)).status(),
              absl::StatusCode::kFailedPrecondition, {"differs from this server's"});
  ExpectError(ParseInto(bytes.substr(0, 300), TestExpectation(), absl::MakeSpan(out)).status(),
              absl::StatusCode::kInvalidArgument,
              {"snapshot truncated: 300 bytes, the snapshot has 416"});
  std::vector<std::byte> small(10);
  ExpectError(ParseInto(bytes, TestExpectation(), absl::MakeSpan(small)).status(),
              absl::StatusCode::kInvalidArgument,
              {"snapshot payload of 288 bytes, the buffer given for it has 10"});
}

TEST(Snapshot, TheFormatIsFixed) {
  // The first bytes as docs/snapshot-format.md describes them: a change here breaks every
  // snapshot already saved.
  const std::string bytes = TestSnapshotBytes(0);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89HGRN2S\n", 8));
  EXPECT_EQ(bytes.substr(8, 8), std::string("\x01\0\0\0\x80\0\0\0", 8));
  EXPECT_EQ(static_cast<uint8_t>(bytes[32]), 1);     // f32
  EXPECT_EQ(static_cast<uint8_t>(bytes[36]), 2);     // layers
  EXPECT_EQ(static_cast<uint8_t>(bytes[64]), 0x20);  // 288 payload bytes, little-endian
  EXPECT_EQ(static_cast<uint8_t>(bytes[65]), 0x01);
}

TEST(Snapshot, WrongMagicIsNotASnapshot) {
  std::string bytes = TestSnapshotBytes(1);
  bytes[1] = 'X';
  ExpectError(Parse(bytes, TestExpectation()).status(), absl::StatusCode::kInvalidArgument,
              {"not an hgrn2 session snapshot"});
  ExpectError(ParseHeader("{\"json\": true}").status(), absl::StatusCode::kInvalidArgument,
              {"not an hgrn2 session snapshot"});
}

TEST(Snapshot, UnknownVersionNamesBoth) {
  std::string bytes = TestSnapshotBytes(1);
  bytes[8] = 7;
  ExpectError(Parse(bytes, TestExpectation()).status(), absl::StatusCode::kInvalidArgument,
              {"version 7 is not supported", "reads versions 1 and 2"});
}

TEST(Snapshot, AnotherModelNamesBothFingerprints) {
  Snapshot other = TestSnapshot(1);
  other.model_fingerprint = hgrn2::testing::TestFingerprint(0x10);
  ExpectError(Parse(Serialize(other), TestExpectation()).status(),
              absl::StatusCode::kFailedPrecondition,
              {"snapshot is of model " + other.model_fingerprint.ToHex(),
               "this server runs model " + hgrn2::testing::TestFingerprint().ToHex()});
}

TEST(Snapshot, AnotherLayoutIsRefused) {
  ExpectError(Parse(TestSnapshotBytes(1, DType::kBF16), TestExpectation(DType::kF32)).status(),
              absl::StatusCode::kFailedPrecondition,
              {"state layout (bf16 states", "differs from this server's (f32 states"});
  Snapshot wider = TestSnapshot(1);
  wider.layout.num_heads = 3;
  wider.state.bytes.resize(wider.layout.state_bytes());
  ExpectError(Parse(Serialize(wider), TestExpectation()).status(),
              absl::StatusCode::kFailedPrecondition, {"3 heads", "2 heads"});
}

TEST(Snapshot, PayloadOfTheWrongSizeForItsLayoutIsCorrupt) {
  Snapshot snapshot = TestSnapshot(1);
  snapshot.state.bytes.pop_back();
  ExpectError(Parse(Serialize(snapshot), TestExpectation()).status(),
              absl::StatusCode::kInvalidArgument,
              {"header is corrupt", "payload of 287 bytes for a state layout of 288"});
}

TEST(Snapshot, TrailingBytesAreRefused) {
  ExpectError(Parse(TestSnapshotBytes(1) + "x", TestExpectation()).status(),
              absl::StatusCode::kInvalidArgument, {"1 trailing bytes after its 416"});
}

TEST(Snapshot, ChecksumsCatchCorruption) {
  std::string bytes = TestSnapshotBytes(1);
  bytes[50] ^= 4;  // a dimension
  ExpectError(Parse(bytes, TestExpectation()).status(), absl::StatusCode::kInvalidArgument,
              {"snapshot header is corrupt: checksum"});
  bytes = TestSnapshotBytes(1);
  bytes[kSnapshotHeaderBytes + 10] ^= 0x80;
  ExpectError(Parse(bytes, TestExpectation()).status(), absl::StatusCode::kInvalidArgument,
              {"snapshot payload is corrupt: checksum"});
}

TEST(Snapshot, AFlippedByteAtEveryOffsetIsRefused) {
  const std::string good = TestSnapshotBytes(5);
  for (size_t offset = 0; offset < good.size(); ++offset) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = good;
      bad[offset] = static_cast<char>(bad[offset] ^ mask);
      absl::StatusOr<Snapshot> parsed = Parse(bad, TestExpectation());
      ASSERT_FALSE(parsed.ok()) << "offset " << offset << " mask " << int{mask};
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
          << "offset " << offset << ": " << parsed.status();
      if (offset < kSnapshotHeaderBytes) {
        EXPECT_FALSE(ParseHeader(bad).ok()) << "offset " << offset;
      }
    }
  }
}

TEST(Snapshot, TruncationAtEveryLengthIsRefused) {
  const std::string good = TestSnapshotBytes(6);
  for (size_t length = 0; length < good.size(); ++length) {
    absl::StatusOr<Snapshot> parsed = Parse(good.substr(0, length), TestExpectation());
    ASSERT_FALSE(parsed.ok()) << length;
    ExpectError(parsed.status(), absl::StatusCode::kInvalidArgument,
                {"snapshot truncated: ", absl::StrCat(length, " bytes")});
  }
  ExpectError(ParseHeader(good.substr(0, 100)).status(), absl::StatusCode::kInvalidArgument,
              {"snapshot truncated: 100 bytes, a header has 128"});
  ExpectError(Parse(good.substr(0, 300), TestExpectation()).status(),
              absl::StatusCode::kInvalidArgument,
              {"snapshot truncated: 300 bytes, the snapshot has 416"});
}

}  // namespace
}  // namespace hgrn2::session

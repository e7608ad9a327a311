// Tests of safetensors loading: round trips through the writer, sharded checkpoints, the fixture,
// and one broken file per validation rule.
#include "engine/checkpoint/weight_file.h"

#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::MakeTempDir;
using ::hgrn2::testing::TestDataDir;
using ::hgrn2::testing::WriteFile;

template <typename T>
std::vector<std::byte> Bytes(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::string LittleEndian64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// A safetensors file: 8-byte length, `header`, then `data`.
std::string SafetensorsBytes(std::string_view header, std::string_view data) {
  return LittleEndian64(header.size()) + std::string(header) + std::string(data);
}

// Writes `contents` as `name` in a fresh folder and opens it.
absl::Status OpenRaw(std::string_view name, std::string_view contents) {
  const std::filesystem::path path = MakeTempDir() / name;
  WriteFile(path, contents);
  return WeightFile::Open(path).status();
}

// A file whose header is `header` and whose data section is `data_size` zero bytes.
absl::Status OpenWithHeader(std::string_view name, std::string_view header, size_t data_size = 64) {
  return OpenRaw(name, SafetensorsBytes(header, std::string(data_size, '\0')));
}

TEST(WeightFileTest, RoundTripThroughWriter) {
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
  const std::vector<uint16_t> bf16 = {FloatToBf16(1.5f), FloatToBf16(-2.0f), FloatToBf16(0.25f),
                                      FloatToBf16(3.0f)};
  const std::vector<uint16_t> f16 = {FloatToF16(0.5f), FloatToF16(-65504.0f),
                                     FloatToF16(0.099975586f), FloatToF16(6.0f)};
  const std::vector<int32_t> i32 = {7, -1, 123456};
  const std::vector<TensorToWrite> tensors = {
      {"a.f32", DType::kF32, {2, 3}, Bytes(f32)}, {"b.bf16", DType::kBF16, {4}, Bytes(bf16)},
      {"c.f16", DType::kF16, {2, 2}, Bytes(f16)}, {"d.i32", DType::kI32, {3}, Bytes(i32)},
      {"e.empty", DType::kF32, {0, 5}, {}},
  };
  const std::filesystem::path path = MakeTempDir() / "round.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->Names(),
            (std::vector<std::string>{"a.f32", "b.bf16", "c.f16", "d.i32", "e.empty"}));
  EXPECT_TRUE(weights->Contains("c.f16"));
  EXPECT_FALSE(weights->Contains("c"));

  absl::StatusOr<TensorView> view = weights->Tensor("c.f16");
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->name, "c.f16");
  EXPECT_EQ(view->file, path.string());
  EXPECT_EQ(view->dtype, DType::kF16);
  EXPECT_EQ(view->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(view->num_elements(), 4);
  ASSERT_EQ(view->bytes.size(), 8u);
  EXPECT_EQ(std::memcmp(view->bytes.data(), f16.data(), 8), 0);

  view = weights->Tensor("d.i32");
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->dtype, DType::kI32);
  ASSERT_EQ(view->bytes.size(), 12u);
  EXPECT_EQ(std::memcmp(view->bytes.data(), i32.data(), 12), 0);

  absl::StatusOr<std::vector<float>> values = weights->ReadFloat("a.f32", {2, 3});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, f32);
  values = weights->ReadFloat("b.bf16", {4});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<float>{1.5f, -2.0f, 0.25f, 3.0f}));
  values = weights->ReadFloat("c.f16", {2, 2});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<float>{0.5f, -65504.0f, 0.099975586f, 6.0f}));
  values = weights->ReadFloat("e.empty", {0, 5});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_TRUE(values->empty());
}

TEST(WeightFileTest, WriterPadsHeaderWithSpacesToMultipleOf8) {
  const std::filesystem::path path = MakeTempDir() / "pad.safetensors";
  ASSERT_TRUE(
      WriteSafetensors(path, {{"x", DType::kF32, {1}, Bytes(std::vector<float>{2.0f})}}).ok());
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GE(file.size(), 8u);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<uint8_t>(file[i]);
  EXPECT_EQ(header_size % 8, 0u);
  ASSERT_EQ(file.size(), 8 + header_size + 4);
  const std::string header = file.substr(8, header_size);
  const size_t json_end = header.find_last_of('}');
  ASSERT_NE(json_end, std::string::npos);
  EXPECT_EQ(header.find_first_not_of(' ', json_end + 1), std::string::npos) << header;

  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(*weights->ReadFloat("x", {1}), std::vector<float>{2.0f});
}

TEST(WeightFileTest, ReadFloatRefusesWrongShapeNamingBothShapes) {
  const std::filesystem::path path = MakeTempDir() / "shape.safetensors";
  ASSERT_TRUE(WriteSafetensors(
                  path, {{"layer.w", DType::kF32, {128, 64}, Bytes(std::vector<float>(128 * 64))}})
                  .ok());
  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectError(weights->ReadFloat("layer.w", {64, 128}).status(), absl::StatusCode::kInvalidArgument,
              {"layer.w", "shape.safetensors", "[128, 64]", "[64, 128]"});
  ExpectError(weights->ReadFloat("layer.w", {128 * 64}).status(),
              absl::StatusCode::kInvalidArgument, {"[128, 64]", "[8192]"});
}

TEST(WeightFileTest, ReadFloatRefusesIntegerDtype) {
  const std::filesystem::path path = MakeTempDir() / "ids.safetensors";
  ASSERT_TRUE(
      WriteSafetensors(path, {{"ids", DType::kI32, {2}, Bytes(std::vector<int32_t>{1, 2})}}).ok());
  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectError(weights->ReadFloat("ids", {2}).status(), absl::StatusCode::kInvalidArgument,
              {"ids", "I32", "ids.safetensors"});
}

TEST(WeightFileTest, MissingTensorIsNotFoundNamingTensorAndFile) {
  const std::filesystem::path path = MakeTempDir() / "one.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"x", DType::kF32, {1}, Bytes(std::vector<float>{1})}}).ok());
  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectError(weights->Tensor("model.norm.weight").status(), absl::StatusCode::kNotFound,
              {"model.norm.weight", "one.safetensors"});
  ExpectError(weights->ReadFloat("model.norm.weight", {1}).status(), absl::StatusCode::kNotFound,
              {"model.norm.weight", "one.safetensors"});
}

TEST(WeightFileTest, WriterRefusesByteCountNotMatchingShape) {
  const std::filesystem::path path = MakeTempDir() / "bad.safetensors";
  ExpectError(WriteSafetensors(path, {{"w", DType::kF32, {3}, Bytes(std::vector<float>{1, 2})}}),
              absl::StatusCode::kInvalidArgument, {"\"w\"", "8 bytes", "[3]"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(WeightFileTest, WriterReportsIoFailure) {
  const std::filesystem::path path = MakeTempDir() / "no-such-folder" / "x.safetensors";
  const absl::Status status =
      WriteSafetensors(path, {{"w", DType::kF32, {1}, Bytes(std::vector<float>{1})}});
  ExpectError(status, absl::StatusCode::kNotFound, {"x.safetensors"});
}

// --- Sharded checkpoints -----------------------------------------------------------------------

// Writes two shards and their index into `dir`: "a" and "b" in shard 1, "c" in shard 2.
void WriteShardedModel(const std::filesystem::path& dir) {
  ASSERT_TRUE(WriteSafetensors(dir / "model-00001-of-00002.safetensors",
                               {{"a", DType::kF32, {2}, Bytes(std::vector<float>{1, 2})},
                                {"b", DType::kF32, {1}, Bytes(std::vector<float>{3})}})
                  .ok());
  ASSERT_TRUE(
      WriteSafetensors(
          dir / "model-00002-of-00002.safetensors",
          {{"c", DType::kBF16, {2}, Bytes(std::vector<uint16_t>{FloatToBf16(4), FloatToBf16(5)})}})
          .ok());
  WriteFile(dir / "model.safetensors.index.json", R"({
    "metadata": {"total_size": 16},
    "weight_map": {
      "a": "model-00001-of-00002.safetensors",
      "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"
    }
  })");
}

void ExpectShardedModel(const WeightFile& weights, const std::filesystem::path& dir) {
  EXPECT_EQ(weights.Names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(*weights.ReadFloat("a", {2}), (std::vector<float>{1, 2}));
  EXPECT_EQ(*weights.ReadFloat("b", {1}), std::vector<float>{3});
  EXPECT_EQ(*weights.ReadFloat("c", {2}), (std::vector<float>{4, 5}));
  EXPECT_EQ(weights.Tensor("c")->file, (dir / "model-00002-of-00002.safetensors").string());
  EXPECT_EQ(weights.Tensor("a")->file, (dir / "model-00001-of-00002.safetensors").string());
}

TEST(WeightFileTest, ShardedModelOpensFromFolder) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectShardedModel(*weights, dir);
  ExpectError(weights->Tensor("d").status(), absl::StatusCode::kNotFound,
              {"\"d\"", "model.safetensors.index.json"});
}

TEST(WeightFileTest, ShardedModelOpensFromIndexPath) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir / "model.safetensors.index.json");
  ASSERT_TRUE(weights.ok()) << weights.status();
  ExpectShardedModel(*weights, dir);
}

TEST(WeightFileTest, FolderPrefersIndexOverSingleFile) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors",
                               {{"single", DType::kF32, {1}, Bytes(std::vector<float>{9})}})
                  .ok());
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_FALSE(weights->Contains("single"));
  EXPECT_TRUE(weights->Contains("c"));
}

TEST(WeightFileTest, FolderWithSingleFileOpens) {
  const std::filesystem::path dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors",
                               {{"single", DType::kF32, {1}, Bytes(std::vector<float>{9})}})
                  .ok());
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(*weights->ReadFloat("single", {1}), std::vector<float>{9});
}

TEST(WeightFileTest, FolderWithoutWeightsIsNotFound) {
  const std::filesystem::path dir = MakeTempDir();
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kNotFound,
              {dir.string(), "model.safetensors"});
}

TEST(WeightFileTest, MissingPathIsNotFound) {
  const std::filesystem::path path = MakeTempDir() / "nothing.safetensors";
  ExpectError(WeightFile::Open(path).status(), absl::StatusCode::kNotFound,
              {"nothing.safetensors"});
}

TEST(WeightFileTest, IndexNamingMissingShardFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kNotFound,
              {"model-00002-of-00002.safetensors", "model.safetensors.index.json", "\"c\""});
}

TEST(WeightFileTest, IndexNamingTensorAbsentFromItsShardFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model.safetensors.index.json", R"({"weight_map": {
      "a": "model-00001-of-00002.safetensors",
      "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors",
      "model.norm.weight": "model-00002-of-00002.safetensors"}})");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"model.norm.weight", "model-00002-of-00002.safetensors"});
}

TEST(WeightFileTest, IndexNamingWrongShardForTensorFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model.safetensors.index.json", R"({"weight_map": {
      "a": "model-00002-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"\"a\"", "model-00002-of-00002.safetensors"});
}

TEST(WeightFileTest, TensorInTwoShardsFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  ASSERT_TRUE(WriteSafetensors(dir / "model-00002-of-00002.safetensors",
                               {{"b", DType::kF32, {1}, Bytes(std::vector<float>{3})},
                                {"c", DType::kF32, {2}, Bytes(std::vector<float>{4, 5})}})
                  .ok());
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"\"b\"", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST(WeightFileTest, IndexShardOutsideFolderFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model.safetensors.index.json",
            R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"\"a\"", "../model-00001-of-00002.safetensors"});
}

TEST(WeightFileTest, IndexNotJsonFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteFile(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors.index.json", "not valid JSON"});
}

TEST(WeightFileTest, IndexWithoutWeightMapFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteFile(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors.index.json", "weight_map"});
}

TEST(WeightFileTest, IndexShardNotAStringFails) {
  const std::filesystem::path dir = MakeTempDir();
  WriteFile(dir / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  ExpectError(WeightFile::Open(dir).status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors.index.json", "\"a\""});
}

TEST(WeightFileTest, OpeningOneShardDirectlyGivesItsTensors) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir / "model-00002-of-00002.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->Names(), std::vector<std::string>{"c"});
}

TEST(WeightFileTest, MovedWeightFileKeepsViewsValid) {
  const std::filesystem::path dir = MakeTempDir();
  WriteShardedModel(dir);
  absl::StatusOr<WeightFile> opened = WeightFile::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const TensorView before = *opened->Tensor("a");
  WeightFile moved = std::move(*opened);
  const TensorView after = *moved.Tensor("a");
  EXPECT_EQ(before.bytes.data(), after.bytes.data());
  EXPECT_EQ(*moved.ReadFloat("a", {2}), (std::vector<float>{1, 2}));
}

// --- The fixture checkpoint --------------------------------------------------------------------

TEST(WeightFileTest, OpensTinyAFixture) {
  absl::StatusOr<WeightFile> weights =
      WeightFile::Open(TestDataDir() / "tiny-a" / "model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  // 3 layers of 10 tensors, plus embeddings, lower bounds, final norm and lm_head.
  EXPECT_EQ(weights->Names().size(), 34u);
  EXPECT_FALSE(weights->Contains("__metadata__"));

  absl::StatusOr<TensorView> q = weights->Tensor("model.layers.0.attn.q_proj.weight");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->dtype, DType::kF32);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(q->bytes.size(), 128u * 128u * 4u);

  absl::StatusOr<TensorView> down = weights->Tensor("model.layers.2.mlp.down_proj.weight");
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_EQ(down->shape, (std::vector<int64_t>{128, 512}));
  absl::StatusOr<TensorView> head = weights->Tensor("lm_head.weight");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->shape, (std::vector<int64_t>{512, 128}));

  // Values read independently from the file with Python's struct module.
  absl::StatusOr<std::vector<float>> lower = weights->ReadFloat("model.lower_bounds", {3, 128});
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ((*lower)[0], -0.5107975602149963f);
  EXPECT_EQ((*lower)[1], 1.0282717943191528f);
  EXPECT_EQ(lower->back(), 1.7064200639724731f);
  absl::StatusOr<std::vector<float>> q_values =
      weights->ReadFloat("model.layers.0.attn.q_proj.weight", {128, 128});
  ASSERT_TRUE(q_values.ok()) << q_values.status();
  EXPECT_EQ((*q_values)[0], 0.03700614348053932f);
  EXPECT_EQ(q_values->back(), -0.10470375418663025f);
}

TEST(WeightFileTest, OpensTinyConvFixtureFolder) {
  absl::StatusOr<WeightFile> weights = WeightFile::Open(TestDataDir() / "tiny-conv");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_FALSE(weights->Contains("lm_head.weight"));  // tied embeddings
  absl::StatusOr<TensorView> conv = weights->Tensor("model.layers.1.attn.q_conv1d.weight");
  ASSERT_TRUE(conv.ok()) << conv.status();
  EXPECT_EQ(conv->shape, (std::vector<int64_t>{128, 1, 4}));
  EXPECT_EQ(weights->Tensor("model.lower_bounds")->shape, (std::vector<int64_t>{2, 128}));
}

// --- One broken file per validation rule -------------------------------------------------------

TEST(SafetensorsValidationTest, FileShorterThanEightBytes) {
  ExpectError(OpenRaw("short.safetensors", "abc"), absl::StatusCode::kInvalidArgument,
              {"short.safetensors", "3 bytes"});
  ExpectError(OpenRaw("empty.safetensors", ""), absl::StatusCode::kInvalidArgument,
              {"empty.safetensors", "0 bytes"});
}

TEST(SafetensorsValidationTest, HeaderLengthPastEndOfFile) {
  ExpectError(OpenRaw("cut.safetensors", LittleEndian64(100) + "{}"), absl::StatusCode::kDataLoss,
              {"cut.safetensors", "100"});
  ExpectError(OpenRaw("huge.safetensors", LittleEndian64(~uint64_t{0}) + "{}"),
              absl::StatusCode::kDataLoss, {"huge.safetensors"});
}

TEST(SafetensorsValidationTest, HeaderNotJson) {
  ExpectError(OpenWithHeader("garbage.safetensors", "{\"w\": {\"dtype\": "),
              absl::StatusCode::kInvalidArgument, {"garbage.safetensors", "not valid JSON"});
}

TEST(SafetensorsValidationTest, HeaderNotAnObject) {
  ExpectError(OpenWithHeader("array.safetensors", "[1, 2]"), absl::StatusCode::kInvalidArgument,
              {"array.safetensors", "JSON object"});
}

TEST(SafetensorsValidationTest, TensorEntryNotAnObject) {
  ExpectError(OpenWithHeader("entry.safetensors", R"({"model.norm.weight": [1, 2]})"),
              absl::StatusCode::kInvalidArgument,
              {"entry.safetensors", "model.norm.weight", "object"});
}

TEST(SafetensorsValidationTest, MissingDtype) {
  ExpectError(
      OpenWithHeader("nodtype.safetensors", R"({"w": {"shape": [1], "data_offsets": [0, 4]}})"),
      absl::StatusCode::kInvalidArgument, {"nodtype.safetensors", "\"w\"", "dtype"});
}

TEST(SafetensorsValidationTest, MissingShape) {
  ExpectError(
      OpenWithHeader("noshape.safetensors", R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})"),
      absl::StatusCode::kInvalidArgument, {"noshape.safetensors", "\"w\"", "shape"});
}

TEST(SafetensorsValidationTest, MissingDataOffsets) {
  ExpectError(OpenWithHeader("nooffsets.safetensors", R"({"w": {"dtype": "F32", "shape": [1]}})"),
              absl::StatusCode::kInvalidArgument,
              {"nooffsets.safetensors", "\"w\"", "data_offsets"});
}

TEST(SafetensorsValidationTest, DtypeNotAString) {
  ExpectError(OpenWithHeader("dtypetype.safetensors",
                             R"({"w": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})"),
              absl::StatusCode::kInvalidArgument, {"dtypetype.safetensors", "\"w\"", "dtype"});
}

TEST(SafetensorsValidationTest, ShapeNotAnArrayOfIntegers) {
  ExpectError(OpenWithHeader("shapetype.safetensors",
                             R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})"),
              absl::StatusCode::kInvalidArgument, {"shapetype.safetensors", "\"w\"", "shape"});
  ExpectError(OpenWithHeader("shapefloat.safetensors",
                             R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})"),
              absl::StatusCode::kInvalidArgument, {"shapefloat.safetensors", "\"w\"", "shape"});
  ExpectError(OpenWithHeader("shapestring.safetensors",
                             R"({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})"),
              absl::StatusCode::kInvalidArgument, {"shapestring.safetensors", "\"w\"", "shape"});
}

TEST(SafetensorsValidationTest, UnknownDtype) {
  ExpectError(
      OpenWithHeader("dtype.safetensors",
                     R"({"w": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})"),
      absl::StatusCode::kInvalidArgument, {"dtype.safetensors", "\"w\"", "F8_E5M2"});
}

TEST(SafetensorsValidationTest, NegativeDimension) {
  ExpectError(
      OpenWithHeader("negative.safetensors",
                     R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}})"),
      absl::StatusCode::kInvalidArgument, {"negative.safetensors", "\"w\"", "-1"});
}

TEST(SafetensorsValidationTest, ElementCountOverflow) {
  ExpectError(
      OpenWithHeader(
          "overflow.safetensors",
          R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})"),
      absl::StatusCode::kInvalidArgument, {"overflow.safetensors", "\"w\"", "overflow"});
  // Even with a zero making the tensor empty: products of the other dimensions must still fit.
  ExpectError(
      OpenWithHeader(
          "emptyoverflow.safetensors",
          R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})"),
      absl::StatusCode::kInvalidArgument, {"emptyoverflow.safetensors", "\"w\"", "overflow"});
  // Fits in int64 elements, but not in bytes.
  ExpectError(
      OpenWithHeader(
          "byteoverflow.safetensors",
          R"({"w": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})"),
      absl::StatusCode::kInvalidArgument, {"byteoverflow.safetensors", "\"w\"", "overflow"});
  ExpectError(
      OpenWithHeader(
          "hugedim.safetensors",
          R"({"w": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]}})"),
      absl::StatusCode::kInvalidArgument, {"hugedim.safetensors", "\"w\""});
}

TEST(SafetensorsValidationTest, DataOffsetsNotABeginEndPair) {
  for (const char* offsets : {"[0]", "[0, 4, 8]", "4", "[\"0\", \"4\"]", "[-4, 0]", "[0.0, 4.0]"}) {
    const std::string header =
        std::string(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": )") + offsets + "}}";
    ExpectError(OpenWithHeader("offsets.safetensors", header), absl::StatusCode::kInvalidArgument,
                {"offsets.safetensors", "\"w\"", "data_offsets"});
  }
}

TEST(SafetensorsValidationTest, DataOffsetsBeginAfterEnd) {
  ExpectError(OpenWithHeader("reversed.safetensors",
                             R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})"),
              absl::StatusCode::kInvalidArgument, {"reversed.safetensors", "\"w\"", "[8, 4]"});
}

TEST(SafetensorsValidationTest, DataOffsetsPastDataSectionIsDataLoss) {
  ExpectError(OpenWithHeader("truncated.safetensors",
                             R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                             /*data_size=*/12),
              absl::StatusCode::kDataLoss, {"truncated.safetensors", "\"w\"", "truncated"});
}

TEST(SafetensorsValidationTest, ByteSizeDiffersFromShape) {
  ExpectError(
      OpenWithHeader("size.safetensors",
                     R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})"),
      absl::StatusCode::kInvalidArgument, {"size.safetensors", "\"w\"", "BF16", "[2, 3]", "12"});
}

TEST(SafetensorsValidationTest, OverlappingRanges) {
  ExpectError(OpenWithHeader("overlap.safetensors", R"({
      "first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})"),
              absl::StatusCode::kInvalidArgument, {"overlap.safetensors", "first", "second"});
  // Empty ranges overlap nothing, even inside another tensor's bytes.
  EXPECT_TRUE(OpenWithHeader("empty-range.safetensors", R"({
      "first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "empty": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})")
                  .ok());
}

TEST(SafetensorsValidationTest, RepeatedTensorName) {
  ExpectError(OpenWithHeader("twice.safetensors", R"({
      "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})"),
              absl::StatusCode::kInvalidArgument, {"twice.safetensors", "\"w\"", "twice"});
}

TEST(SafetensorsValidationTest, MetadataIsAllowedAndIgnored) {
  const std::filesystem::path path = MakeTempDir() / "meta.safetensors";
  std::string data(4, '\0');
  const float value = 1.5f;
  std::memcpy(data.data(), &value, 4);
  WriteFile(path, SafetensorsBytes(R"({"__metadata__": {"format": "pt"},
      "w": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}})",
                                   data));
  absl::StatusOr<WeightFile> weights = WeightFile::Open(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->Names(), std::vector<std::string>{"w"});
  EXPECT_EQ(weights->Tensor("w")->num_elements(), 1);  // a scalar
  EXPECT_EQ(*weights->ReadFloat("w", {}), std::vector<float>{1.5f});
}

TEST(SafetensorsValidationTest, MetadataNotAnObject) {
  ExpectError(OpenWithHeader("meta.safetensors", R"({"__metadata__": "pt"})"),
              absl::StatusCode::kInvalidArgument, {"meta.safetensors", "__metadata__"});
}

// --- The pure parsers --------------------------------------------------------------------------

TEST(ParseSafetensorsTest, HeaderParserReturnsSortedTensorsWithoutBytes) {
  absl::StatusOr<std::vector<TensorView>> views = ParseSafetensorsHeader(
      R"({"z": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
          "a": {"dtype": "F16", "shape": [3, 1], "data_offsets": [16, 22]}})",
      22, "header.json");
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 2u);
  EXPECT_EQ((*views)[0].name, "a");
  EXPECT_EQ((*views)[0].dtype, DType::kF16);
  EXPECT_EQ((*views)[0].shape, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ((*views)[0].file, "header.json");
  EXPECT_TRUE((*views)[0].bytes.empty());
  EXPECT_EQ((*views)[1].name, "z");
  EXPECT_EQ((*views)[1].dtype, DType::kI64);

  ExpectError(
      ParseSafetensorsHeader(R"({"z": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})",
                             15, "header.json")
          .status(),
      absl::StatusCode::kDataLoss, {"header.json", "\"z\""});
}

TEST(ParseSafetensorsTest, WholeFileParserPointsIntoBuffer) {
  std::string data(12, '\0');
  const float values[3] = {1, 2, 3};
  std::memcpy(data.data(), values, 12);
  const std::string file = SafetensorsBytes(
      R"({"w": {"dtype": "F32", "shape": [1, 2], "data_offsets": [4, 12]}})", data);
  const absl::Span<const std::byte> bytes(reinterpret_cast<const std::byte*>(file.data()),
                                          file.size());
  absl::StatusOr<std::vector<TensorView>> views = ParseSafetensors(bytes, "memory");
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 1u);
  const TensorView& view = (*views)[0];
  EXPECT_EQ(view.bytes.data(), bytes.data() + bytes.size() - 8);
  EXPECT_EQ(view.bytes.size(), 8u);
  std::vector<float> out(2);
  ASSERT_TRUE(ConvertToFloat(view.dtype, view.bytes.data(), 2, out.data()).ok());
  EXPECT_EQ(out, (std::vector<float>{2, 3}));

  ExpectError(ParseSafetensors(bytes.first(5), "memory").status(),
              absl::StatusCode::kInvalidArgument, {"memory"});
  ExpectError(ParseSafetensors(bytes.first(bytes.size() - 1), "memory").status(),
              absl::StatusCode::kDataLoss, {"memory", "\"w\""});
}

}  // namespace
}  // namespace hgrn2

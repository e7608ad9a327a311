// Tests of config.json parsing: the fixtures, fla's defaults and derivations, and every refusal.
#include "engine/checkpoint/model_config.h"

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::MakeTempDir;
using ::hgrn2::testing::TestDataDir;
using ::hgrn2::testing::WriteFile;
using Json = nlohmann::json;

// A valid small config (tiny-a's shape) to vary one field at a time.
Json BaseConfig() {
  return Json::parse(R"({
    "model_type": "hgrn2",
    "vocab_size": 512,
    "hidden_size": 128,
    "num_hidden_layers": 3,
    "num_heads": 4,
    "expand_ratio": 32,
    "intermediate_size": null,
    "hidden_ratio": 4,
    "hidden_act": "swish",
    "use_short_conv": false,
    "conv_size": 4,
    "use_lower_bound": true,
    "norm_eps": 1e-06,
    "tie_word_embeddings": false,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": null,
    "attn": null,
    "attnres_block_size": null,
    "elementwise_affine": true
  })");
}

absl::StatusOr<ModelConfig> ParseJson(const Json& json) {
  return ModelConfig::Parse(json.dump(), "config.json");
}

// The error from `json` with `field` set to `value`.
absl::Status ErrorWith(std::string_view field, const Json& value) {
  Json json = BaseConfig();
  json[std::string(field)] = value;
  return ParseJson(json).status();
}

TEST(ModelConfigTest, LoadsTinyAFixture) {
  absl::StatusOr<ModelConfig> config = ModelConfig::Load(TestDataDir() / "tiny-a");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 512);
  EXPECT_EQ(config->hidden_size, 128);
  EXPECT_EQ(config->num_layers, 3);
  EXPECT_EQ(config->num_heads, 4);
  EXPECT_EQ(config->key_dim, 32);
  EXPECT_EQ(config->value_dim, 32);
  EXPECT_EQ(config->intermediate_size, 512);
  EXPECT_FALSE(config->use_short_conv);
  EXPECT_EQ(config->conv_window(), 0);
  EXPECT_TRUE(config->use_lower_bound);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FLOAT_EQ(config->norm_eps, 1e-6f);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_FALSE(config->pad_token_id.has_value());
  EXPECT_EQ(config->state_floats_per_layer(), 4 * 32 * 32);
  EXPECT_EQ(config->state_bytes(), 3 * 4 * 32 * 32 * 4);
}

TEST(ModelConfigTest, LoadsTinyConvFixtureFromFilePath) {
  absl::StatusOr<ModelConfig> config =
      ModelConfig::Load(TestDataDir() / "tiny-conv" / "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 384);
  EXPECT_EQ(config->hidden_size, 128);
  EXPECT_EQ(config->num_layers, 2);
  EXPECT_EQ(config->num_heads, 2);
  EXPECT_EQ(config->key_dim, 64);
  EXPECT_EQ(config->value_dim, 64);
  EXPECT_EQ(config->intermediate_size, 512);
  EXPECT_TRUE(config->use_short_conv);
  EXPECT_EQ(config->conv_size, 4);
  EXPECT_EQ(config->conv_window(), 4);
  EXPECT_EQ(config->conv_floats_per_layer(), 3 * 128 * 4);
  EXPECT_TRUE(config->tie_word_embeddings);
}

TEST(ModelConfigTest, EmptyObjectTakesFlaDefaults) {
  absl::StatusOr<ModelConfig> config = ModelConfig::Parse("{}", "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 32000);
  EXPECT_EQ(config->hidden_size, 2048);
  EXPECT_EQ(config->num_layers, 24);
  EXPECT_EQ(config->num_heads, 16);  // 2048 / expand_ratio 128
  EXPECT_EQ(config->key_dim, 128);
  EXPECT_EQ(config->value_dim, 128);
  EXPECT_EQ(config->intermediate_size, 5632);
  EXPECT_FALSE(config->use_short_conv);
  EXPECT_EQ(config->conv_size, 4);
  EXPECT_TRUE(config->use_lower_bound);
  EXPECT_FLOAT_EQ(config->norm_eps, 1e-6f);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_FALSE(config->pad_token_id.has_value());
  EXPECT_EQ(config->state_bytes(), 24 * 16 * 128 * 128 * 4);  // 24 MiB, as HGRN2.md says
}

TEST(ModelConfigTest, NumHeadsOnlyDerivesKeyDim) {
  Json json = BaseConfig();
  json["num_heads"] = 8;
  json["expand_ratio"] = nullptr;
  absl::StatusOr<ModelConfig> config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_heads, 8);
  EXPECT_EQ(config->key_dim, 16);
  EXPECT_EQ(config->value_dim, 16);
}

TEST(ModelConfigTest, ExpandRatioOnlyDerivesHeads) {
  Json json = BaseConfig();
  json["num_heads"] = nullptr;
  json["expand_ratio"] = 64;
  absl::StatusOr<ModelConfig> config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_heads, 2);
  EXPECT_EQ(config->key_dim, 64);
  EXPECT_EQ(config->value_dim, 64);

  json.erase("num_heads");
  config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_heads, 2);
}

TEST(ModelConfigTest, AbsentExpandRatioIsTheDefault128) {
  // As in fla, an absent expand_ratio is 128, not null: with num_heads 4 and D 128 that is
  // inconsistent, and the message says the default was used.
  Json json = BaseConfig();
  json.erase("expand_ratio");
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"expand_ratio\"", "128", "default", "num_heads 4"});
  json["hidden_size"] = 512;
  absl::StatusOr<ModelConfig> config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->key_dim, 128);
  EXPECT_EQ(config->value_dim, 128);
}

TEST(ModelConfigTest, ExplicitIntermediateSizeWins) {
  Json json = BaseConfig();
  json["intermediate_size"] = 300;
  absl::StatusOr<ModelConfig> config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intermediate_size, 300);
}

TEST(ModelConfigTest, DerivesIntermediateSizeLikeFla) {
  struct Case {
    int64_t hidden_size;
    Json hidden_ratio;
    int64_t expected;
  };
  const Case cases[] = {
      {2048, 4, 5632},        // int(5461.33) = 5461 -> 22 * 256
      {96, 4, 256},           // exactly 256: no rounding up
      {128, 4, 512},          // 341 -> 512
      {1024, 4, 2816},        // 2730 -> 2816
      {768, 3.5, 1792},       // float ratio: int(1792.0) = 1792
      {2048, nullptr, 5632},  // null hidden_ratio means 4
      {8, 1, 256},            // int(5.33) = 5 -> 256
  };
  for (const Case& c : cases) {
    Json json = BaseConfig();
    json["hidden_size"] = c.hidden_size;
    json["num_heads"] = nullptr;
    json["expand_ratio"] = c.hidden_size / 4;
    json["hidden_ratio"] = c.hidden_ratio;
    absl::StatusOr<ModelConfig> config = ParseJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->intermediate_size, c.expected)
        << "D " << c.hidden_size << " hidden_ratio " << c.hidden_ratio;
  }
}

TEST(ModelConfigTest, EosMayBeAList) {
  Json json = BaseConfig();
  json["eos_token_id"] = {2, 7, 11};
  json["bos_token_id"] = nullptr;
  json["pad_token_id"] = 0;
  absl::StatusOr<ModelConfig> config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->eos_token_ids, (std::vector<int32_t>{2, 7, 11}));
  EXPECT_FALSE(config->bos_token_id.has_value());
  EXPECT_EQ(config->pad_token_id, 0);

  json["eos_token_id"] = nullptr;
  config = ParseJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->eos_token_ids.empty());
}

TEST(ModelConfigTest, SiluIsSwish) {
  Json json = BaseConfig();
  json["hidden_act"] = "silu";
  EXPECT_TRUE(ParseJson(json).ok());
}

TEST(ModelConfigTest, UnknownFieldsAreIgnored) {
  Json json = BaseConfig();
  json["fuse_swiglu"] = true;
  json["transformers_version"] = "5.17.0";
  EXPECT_TRUE(ParseJson(json).ok());
}

// --- Refusals --------------------------------------------------------------------------------

TEST(ModelConfigRefusalTest, WrongModelType) {
  ExpectError(ErrorWith("model_type", "mamba"), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"model_type\"", "mamba", "hgrn2"});
  ExpectError(ErrorWith("model_type", 3), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"model_type\"", "string"});
}

TEST(ModelConfigRefusalTest, UnsupportedActivation) {
  const absl::Status status = ErrorWith("hidden_act", "gelu");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "config.json: field \"hidden_act\": unsupported activation \"gelu\" (supported: "
            "swish, silu)");
}

TEST(ModelConfigRefusalTest, HybridAttentionLayers) {
  ExpectError(ErrorWith("attn", Json::parse(R"({"layers": [1], "num_heads": 4})")),
              absl::StatusCode::kInvalidArgument, {"config.json", "\"attn\"", "null"});
}

TEST(ModelConfigRefusalTest, AttnresBlockSize) {
  ExpectError(ErrorWith("attnres_block_size", 4), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"attnres_block_size\"", "null"});
}

TEST(ModelConfigRefusalTest, ElementwiseAffineFalse) {
  ExpectError(ErrorWith("elementwise_affine", false), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"elementwise_affine\"", "true"});
  ExpectError(ErrorWith("elementwise_affine", nullptr), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"elementwise_affine\"", "boolean"});
}

TEST(ModelConfigRefusalTest, HeadsTimesExpandRatioNotHiddenSize) {
  Json json = BaseConfig();
  json["num_heads"] = 4;
  json["expand_ratio"] = 64;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"expand_ratio\"", "num_heads 4", "expand_ratio 64", "128"});
}

TEST(ModelConfigRefusalTest, HiddenSizeNotDivisibleByHeads) {
  Json json = BaseConfig();
  json["num_heads"] = 3;
  json["expand_ratio"] = nullptr;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"num_heads\"", "128", "3"});
  json["num_heads"] = nullptr;
  json["expand_ratio"] = 48;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"expand_ratio\"", "128", "48"});
  json["expand_ratio"] = 256;  // D / expand_ratio would be 0 heads
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"expand_ratio\""});
}

TEST(ModelConfigRefusalTest, NeitherHeadsNorExpandRatio) {
  Json json = BaseConfig();
  json["num_heads"] = nullptr;
  json["expand_ratio"] = nullptr;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "num_heads", "expand_ratio"});
}

TEST(ModelConfigRefusalTest, NonPositiveSizes) {
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "num_heads",
                            "expand_ratio", "intermediate_size"}) {
    ExpectError(ErrorWith(field, -4), absl::StatusCode::kInvalidArgument,
                {"config.json", absl::StrCat("\"", field, "\""), "positive", "-4"});
    ExpectError(ErrorWith(field, 0), absl::StatusCode::kInvalidArgument,
                {"config.json", absl::StrCat("\"", field, "\""), "positive"});
  }
  ExpectError(ErrorWith("hidden_ratio", -1), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"hidden_ratio\"", "positive"});
  ExpectError(ErrorWith("vocab_size", 1LL << 40), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"vocab_size\"", "too large"});
}

TEST(ModelConfigRefusalTest, ConvSizeBelowOneWithShortConv) {
  Json json = BaseConfig();
  json["use_short_conv"] = true;
  json["conv_size"] = 0;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"conv_size\"", "use_short_conv"});
  json["use_short_conv"] = false;  // unused without short conv
  EXPECT_TRUE(ParseJson(json).ok());
}

TEST(ModelConfigRefusalTest, WrongJsonTypesNameFieldAndExpectedType) {
  struct Case {
    const char* field;
    Json value;
    const char* expected;
  };
  const Case cases[] = {
      {"hidden_size", "128", "an integer"},
      {"vocab_size", 512.0, "an integer"},
      {"num_hidden_layers", nullptr, "an integer"},
      {"num_heads", true, "an integer or null"},
      {"expand_ratio", "32", "an integer or null"},
      {"intermediate_size", 512.5, "an integer or null"},
      {"hidden_ratio", "4", "a number or null"},
      {"hidden_act", 1, "a string"},
      {"use_short_conv", 1, "a boolean"},
      {"use_lower_bound", "true", "a boolean"},
      {"tie_word_embeddings", nullptr, "a boolean"},
      {"conv_size", 4.5, "an integer"},
      {"norm_eps", "1e-6", "a number"},
      {"bos_token_id", "1", "an integer or null"},
      {"pad_token_id", 1.5, "an integer or null"},
      {"eos_token_id", "2", "an integer, a list of integers or null"},
      {"eos_token_id", Json::array({2, "x"}), "an integer, a list of integers or null"},
  };
  for (const Case& c : cases) {
    ExpectError(ErrorWith(c.field, c.value), absl::StatusCode::kInvalidArgument,
                {"config.json", absl::StrCat("field \"", c.field, "\""),
                 absl::StrCat("expected ", c.expected)});
  }
}

TEST(ModelConfigRefusalTest, TokenIdsOutOfRange) {
  ExpectError(ErrorWith("bos_token_id", -1), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"bos_token_id\"", "-1"});
  ExpectError(ErrorWith("eos_token_id", Json::array({2, 1LL << 33})),
              absl::StatusCode::kInvalidArgument, {"config.json", "\"eos_token_id\""});
}

TEST(ModelConfigRefusalTest, NonPositiveNormEps) {
  ExpectError(ErrorWith("norm_eps", -1e-6), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"norm_eps\""});
  ExpectError(ErrorWith("norm_eps", 0.0), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"norm_eps\"", "positive"});
}

// Found by fuzzing (tests/fuzz/corpus/model_config/norm-eps-*): values that are finite and
// positive as doubles but inf or 0 as the float32 the norms use.
TEST(ModelConfigRefusalTest, NormEpsOutsideFloat32) {
  ExpectError(ErrorWith("norm_eps", 1e39), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"norm_eps\"", "normal float32", "1e+39"});
  ExpectError(ErrorWith("norm_eps", 1e-50), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"norm_eps\"", "normal float32", "1e-50"});
  absl::StatusOr<ModelConfig> smallest = ParseJson([] {
    Json json = BaseConfig();
    json["norm_eps"] = 1.1754944e-38;  // just above FLT_MIN
    return json;
  }());
  ASSERT_TRUE(smallest.ok()) << smallest.status();
  EXPECT_GT(smallest->norm_eps, 0.0f);
}

// Found by fuzzing (tests/fuzz/corpus/model_config/parameters-overflow): sizes each within int32
// and a small state, but 4·D² parameters per layer overflow num_parameters()'s int64.
TEST(ModelConfigRefusalTest, ParameterCountTooLarge) {
  Json json = BaseConfig();
  json["hidden_size"] = 2147483647;
  json["num_heads"] = 2147483647;
  json["expand_ratio"] = 1;
  json["num_hidden_layers"] = 1;
  json["intermediate_size"] = 256;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"hidden_size\"", "parameters (limit 2^50)"});
}

TEST(ModelConfigRefusalTest, StateTooLargeForOneSequence) {
  // Every size is within int32, but L·H·dv·dk·4 bytes would be 2^69.
  Json json = BaseConfig();
  json["hidden_size"] = 1 << 30;
  json["num_heads"] = 1;
  json["expand_ratio"] = 1 << 30;
  json["num_hidden_layers"] = 1 << 5;
  json["intermediate_size"] = 256;
  ExpectError(ParseJson(json).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "\"num_hidden_layers\"", "state"});
}

TEST(ModelConfigRefusalTest, InvalidJson) {
  ExpectError(ModelConfig::Parse("{\"hidden_size\": 128,", "config.json").status(),
              absl::StatusCode::kInvalidArgument, {"config.json", "JSON"});
  ExpectError(ModelConfig::Parse("[1, 2]", "config.json").status(),
              absl::StatusCode::kInvalidArgument, {"config.json", "object"});
}

TEST(ModelConfigRefusalTest, MissingFile) {
  const std::filesystem::path dir = MakeTempDir();
  ExpectError(ModelConfig::Load(dir).status(), absl::StatusCode::kNotFound,
              {(dir / "config.json").string()});
  ExpectError(ModelConfig::Load(dir / "other.json").status(), absl::StatusCode::kNotFound,
              {"other.json"});
}

TEST(ModelConfigRefusalTest, LoadNamesTheFileInParseErrors) {
  const std::filesystem::path dir = MakeTempDir();
  WriteFile(dir / "config.json", R"({"hidden_act": "relu"})");
  ExpectError(ModelConfig::Load(dir).status(), absl::StatusCode::kInvalidArgument,
              {(dir / "config.json").string(), "\"hidden_act\"", "relu"});
}

}  // namespace
}  // namespace hgrn2

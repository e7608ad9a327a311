// Tests of the tokenizers' refusals (malformed tokenizer.json and tokenizer.model, invalid text
// and ids, folders without a tokenizer) and of BPE options the fixtures do not use (fuse_unk,
// merge formats, ignore_merges).
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/base/file_io.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::MakeTempDir;
using ::hgrn2::testing::TestDataDir;
using ::hgrn2::testing::WriteFile;
using Json = nlohmann::json;

// A small valid tokenizer.json to vary one part at a time.
Json BaseJson() {
  return Json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false,
                      "lstrip": false, "rstrip": false, "single_word": false}],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": true,
              "byte_fallback": false, "ignore_merges": false,
              "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "c": 4, "abc": 5, "bc": 6},
              "merges": ["a b", "ab c", "b c"]}
  })");
}

absl::StatusOr<std::vector<int32_t>> EncodeWith(const Json& json, absl::string_view text) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(json.dump());
  if (!tokenizer.ok()) return tokenizer.status();
  return (*tokenizer)->Encode(text, false);
}

absl::Status ErrorOf(const Json& json) { return Tokenizer::FromJson(json.dump()).status(); }

TEST(TokenizerJsonErrorsTest, TruncatedJsonNamesTheParseError) {
  absl::StatusOr<std::string> text =
      ReadFileToString(TestDataDir() / "tokenizers" / "llama-sp" / "tokenizer.json");
  ASSERT_TRUE(text.ok());
  ExpectError(Tokenizer::FromJson(text->substr(0, text->size() / 2)).status(),
              absl::StatusCode::kInvalidArgument, {"tokenizer.json", "parse error"});
  ExpectError(Tokenizer::FromJson("").status(), absl::StatusCode::kInvalidArgument,
              {"tokenizer.json", "parse error"});
  ExpectError(Tokenizer::FromJson("[1, 2]").status(), absl::StatusCode::kInvalidArgument,
              {"must be an object"});
}

TEST(TokenizerJsonErrorsTest, UnknownModelTypeIsNamed) {
  Json json = BaseJson();
  json["model"]["type"] = "Unigram";
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"model", "unsupported model type \"Unigram\""});
  json = BaseJson();
  json.erase("model");
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument, {"model: missing"});
}

TEST(TokenizerJsonErrorsTest, MergesNamingUnknownTokens) {
  Json json = BaseJson();
  json["model"]["merges"] = {"a b", "a z"};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"merges[1] \"a z\"", "token \"z\" is not in the vocabulary"});
  json["model"]["merges"] = {"c a"};  // both known, but "ca" is not
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"merges[0]", "merged token \"ca\" is not in the vocabulary"});
  json["model"]["merges"] = {"ab"};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"merges[0] \"ab\" is not \"a b\""});
  json["model"]["merges"] = Json::array({Json::array({"a"})});
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"merges[0] is neither \"a b\" nor [\"a\", \"b\"]"});
}

TEST(TokenizerJsonErrorsTest, BadVocabularyAndModelOptions) {
  Json json = BaseJson();
  json["model"]["unk_token"] = "<missing>";
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"unk_token \"<missing>\" is not in the vocabulary"});
  json = BaseJson();
  json["model"]["vocab"]["d"] = 3;
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument, {"id 3 is given to both"});
  json = BaseJson();
  json["model"]["vocab"]["d"] = "x";
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"vocab entry \"d\" has a non-integer id"});
  json = BaseJson();
  json["model"]["vocab"]["d"] = 4294967297;  // would be 1 as an int32
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"vocab entry \"d\" has id 4294967297 outside [0, 16777215]"});
  json = BaseJson();
  json["added_tokens"][0]["id"] = 2000000000;
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"added_tokens[0]", "\"id\" must be an integer in [0, 16777215]"});
  json = BaseJson();
  json["model"]["dropout"] = 0.1;
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument, {"dropout"});
  json = BaseJson();
  json["model"]["byte_fallback"] = "yes";
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"\"byte_fallback\" must be a boolean"});
}

TEST(TokenizerJsonErrorsTest, UnknownComponentTypesAreNamedWithTheirPlace) {
  Json json = BaseJson();
  json["normalizer"] = {{"type", "Sequence"},
                        {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"normalizer.normalizers[1]", "unsupported normalizer type \"Lowercase\""});
  json = BaseJson();
  json["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"pre_tokenizer", "unsupported pre_tokenizer type \"BertPreTokenizer\""});
  json = BaseJson();
  json["decoder"] = {{"type", "WordPiece"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"decoder", "unsupported decoder type \"WordPiece\""});
  json = BaseJson();
  json["post_processor"] = {{"type", "BertProcessing"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"post_processor", "unsupported post_processor type \"BertProcessing\""});
  json = BaseJson();
  json["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"pre_tokenizer", "invalid regex \"(unclosed\""});
  json["pre_tokenizer"]["pattern"] = {{"Regex", "a"}};
  json["pre_tokenizer"]["behavior"] = "Sideways";
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"unknown split behavior \"Sideways\""});
  json = BaseJson();
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "__"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"\"replacement\" must be one character"});
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "x"}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"\"prepend_scheme\" must be always, never or first"});
}

TEST(TokenizerJsonErrorsTest, DeeplyNestedSequencesAreRefused) {
  for (const char* kind : {"normalizer", "pre_tokenizer", "decoder", "post_processor"}) {
    const std::string field = std::string(kind) == "normalizer"      ? "normalizers"
                              : std::string(kind) == "pre_tokenizer" ? "pretokenizers"
                              : std::string(kind) == "decoder"       ? "decoders"
                                                                     : "processors";
    Json nested = {{"type", "Sequence"}, {field, Json::array()}};
    for (int i = 0; i < 40; ++i) nested = {{"type", "Sequence"}, {field, {nested}}};
    Json json = BaseJson();
    json[kind] = nested;
    ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
                {kind, "Sequence nested more than 32 deep"});
  }
}

TEST(TokenizerJsonErrorsTest, TemplateNamingAnUnknownSpecialToken) {
  Json json = BaseJson();
  json["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A"}}],
      "special_tokens": {}})");
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"post_processor.single[0]", "special token \"<s>\" is not in \"special_tokens\""});
  json["post_processor"]["special_tokens"] = {{"<s>", {{"id", "<s>"}, {"ids", {99}}}}};
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument,
              {"special token id 99 is outside the vocabulary"});
  json["post_processor"]["single"] = Json::array();
  ExpectError(ErrorOf(json), absl::StatusCode::kInvalidArgument, {"no sequence $A"});
}

TEST(TokenizerErrorsTest, TextMustBeUtf8AndIdsInTheVocabulary) {
  for (const char* name : {"llama-sp", "llama-sp/tokenizer.model", "bytelevel"}) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::Load(TestDataDir() / "tokenizers" / name);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    ExpectError((*tokenizer)->Encode("abc\xC3(", false).status(),
                absl::StatusCode::kInvalidArgument, {"not valid UTF-8", "byte 0xC3 at offset 3"});
    ExpectError((*tokenizer)->Encode("\xED\xA0\x80", false).status(),  // a surrogate
                absl::StatusCode::kInvalidArgument, {"not valid UTF-8", "offset 0"});
    ExpectError((*tokenizer)->Decode(std::vector<int32_t>{5, 1000}, false).status(),
                absl::StatusCode::kInvalidArgument,
                {"token id 1000 at position 1", "not in the vocabulary (1000 ids)"});
    ExpectError((*tokenizer)->Decode(std::vector<int32_t>{-3}, true).status(),
                absl::StatusCode::kInvalidArgument, {"token id -3 at position 0"});
  }
}

TEST(TokenizerErrorsTest, LoadNamesWhatIsMissingOrBroken) {
  const std::filesystem::path empty = MakeTempDir();
  ExpectError(Tokenizer::Load(empty).status(), absl::StatusCode::kNotFound,
              {empty.string(), "has no tokenizer.json or tokenizer.model"});
  ExpectError(Tokenizer::Load(empty / "nothing").status(), absl::StatusCode::kNotFound,
              {"does not exist"});
  const std::filesystem::path broken = MakeTempDir();
  WriteFile(broken / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
  WriteFile(broken / "tokenizer.model", "not used: tokenizer.json comes first");
  ExpectError(Tokenizer::Load(broken).status(), absl::StatusCode::kInvalidArgument,
              {(broken / "tokenizer.json").string(), "parse error"});
  const std::filesystem::path model_only = MakeTempDir();
  WriteFile(model_only / "tokenizer.model", "\x0a\x05garbage");
  ExpectError(Tokenizer::Load(model_only).status(), absl::StatusCode::kInvalidArgument,
              {(model_only / "tokenizer.model").string(), "not a SentencePiece model"});
  ExpectError(Tokenizer::FromSentencePiece("").status(), absl::StatusCode::kInvalidArgument,
              {"tokenizer.model: the file is empty"});
}

// The BPE options that the fixtures leave at one value, against what tokenizers 0.22.2 gives
// for BaseJson() (checked by hand with the Python package).
TEST(BpeOptionsTest, FuseUnkJoinsUnknownRuns) {
  Json json = BaseJson();
  absl::StatusOr<std::vector<int32_t>> ids = EncodeWith(json, "axxbyc");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 0, 2, 0, 4}));
  json["model"]["fuse_unk"] = false;
  ids = EncodeWith(json, "axxbyc");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 0, 0, 2, 0, 4}));
  ids = EncodeWith(json, "abcab");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{5, 3}));
}

TEST(BpeOptionsTest, MergeRanksInBothFormatsAndIgnoreMerges) {
  Json json = BaseJson();
  json["model"]["merges"] = Json::parse(R"([["b", "c"], ["a", "b"]])");
  absl::StatusOr<std::vector<int32_t>> ids = EncodeWith(json, "abc");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 6}));  // "b c" ranks first now
  json["model"]["merges"] = {"b c", "a b"};
  ids = EncodeWith(json, "abc");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 6}));
  json["model"]["ignore_merges"] = true;  // a word in the vocabulary is taken whole
  ids = EncodeWith(json, "abc");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{5}));
}

// Long Llama-style words are split before "▁" runs only when no token has "▁" after another
// character; with such a token ("a▁"), merges cross the split points and the word stays whole.
// Both expectations are what tokenizers 0.22.2 gives.
TEST(BpeOptionsTest, LongMetaspaceWordsSplitOnlyWhereMergesCannotCross) {
  Json json = BaseJson();
  json["pre_tokenizer"] = {{"type", "Metaspace"},
                           {"replacement", "\u2581"},
                           {"prepend_scheme", "first"},
                           {"split", false}};
  json["model"]["vocab"] = {{"<unk>", 0}, {"\u2581", 1}, {"a", 2}, {"\u2581a", 3}};
  json["model"]["merges"] = {"\u2581 a"};
  std::string text = "a";
  for (int i = 0; i < 40; ++i) text += " a";  // 81 bytes: a long word
  absl::StatusOr<std::vector<int32_t>> ids = EncodeWith(json, text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::vector<int32_t>(41, 3));  // "▁a" 41 times, split or not

  json["model"]["vocab"]["a\u2581"] = 4;
  json["model"]["merges"] = {"a \u2581", "\u2581 a"};  // "a▁" first: crosses every "▁"
  ids = EncodeWith(json, text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::vector<int32_t> expected = {1};  // ▁, then "a▁" 40 times, then a
  expected.insert(expected.end(), 40, 4);
  expected.push_back(2);
  EXPECT_EQ(*ids, expected);
}

}  // namespace
}  // namespace hgrn2

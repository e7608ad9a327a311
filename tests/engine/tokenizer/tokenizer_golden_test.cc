// Golden tests of the tokenizers against the reference libraries: every tokenizer in
// tests/data/tokenizers/golden.json (made by make_tokenizers.py with Hugging Face's `tokenizers`
// and `sentencepiece`) must give the same ids and the same decoded text on every text, and
// streaming decode must concatenate to the full decode.
#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/file_io.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::TestDataDir;
using Json = nlohmann::json;

const Json& Golden() {
  static const Json* golden = [] {
    absl::StatusOr<std::string> text =
        ReadFileToString(TestDataDir() / "tokenizers" / "golden.json");
    EXPECT_TRUE(text.ok()) << text.status();
    return new Json(Json::parse(text.ok() ? *text : std::string("{}")));
  }();
  return *golden;
}

std::unique_ptr<Tokenizer> LoadFile(const std::string& file) {
  const std::filesystem::path path = TestDataDir() / "tokenizers" / file;
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = path.extension() == ".model"
                                                             ? Tokenizer::FromSentencePiece(*bytes)
                                                             : Tokenizer::FromJson(*bytes);
  EXPECT_TRUE(tokenizer.ok()) << file << ": " << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

std::string Show(const std::string& text) { return Json(text).dump(); }

// The concatenated deltas of a StreamDecoder fed `ids` one at a time.
std::string StreamAll(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                      bool skip_special) {
  StreamDecoder stream(tokenizer, skip_special);
  std::string text;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> delta = stream.Push(id);
    EXPECT_TRUE(delta.ok()) << delta.status();
    if (delta.ok()) text += *delta;
  }
  absl::StatusOr<std::string> rest = stream.Finish();
  EXPECT_TRUE(rest.ok()) << rest.status();
  if (rest.ok()) text += *rest;
  return text;
}

class TokenizerGoldenTest : public ::testing::TestWithParam<size_t> {
 protected:
  const Json& entry() const { return Golden()["tokenizers"][GetParam()]; }
};

TEST_P(TokenizerGoldenTest, EncodesEveryTextAsTheReference) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->vocab_size(), entry()["vocab_size"].get<int32_t>());
  const Json& texts = Golden()["texts"];
  ASSERT_GE(texts.size(), 40u);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    for (bool add_special : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, add_special);
      ASSERT_TRUE(ids.ok()) << ids.status();
      const auto expected =
          entry()[add_special ? "encode_special" : "encode"][i].get<std::vector<int32_t>>();
      EXPECT_EQ(*ids, expected) << entry()["name"] << " text " << i << " " << Show(text)
                                << " add_special=" << add_special << "\n  got "
                                << absl::StrJoin(*ids, " ") << "\n want "
                                << absl::StrJoin(expected, " ");
    }
  }
}

TEST_P(TokenizerGoldenTest, DecodesAsTheReference) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  const Json& texts = Golden()["texts"];
  int round_trips = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ids = entry()["encode"][i].get<std::vector<int32_t>>();
    absl::StatusOr<std::string> text = tokenizer->Decode(ids, false);
    ASSERT_TRUE(text.ok()) << text.status();
    const std::string expected = entry()["decode"][i];
    EXPECT_EQ(*text, expected) << entry()["name"] << " text " << i;
    // Where the reference round-trips, so do we (implied by equality; counted to be sure the
    // texts exercise it).
    if (expected == texts[i].get<std::string>()) ++round_trips;
    const auto special = entry()["encode_special"][i].get<std::vector<int32_t>>();
    absl::StatusOr<std::string> skipped = tokenizer->Decode(special, true);
    ASSERT_TRUE(skipped.ok()) << skipped.status();
    EXPECT_EQ(*skipped, entry()["decode_skip"][i].get<std::string>())
        << entry()["name"] << " text " << i << " (skip special)";
  }
  EXPECT_GT(round_trips, 0);
}

TEST_P(TokenizerGoldenTest, DecodesRandomIdsAsTheReference) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  const Json& lists = entry()["random_ids"];
  ASSERT_GE(lists.size(), 20u);
  for (size_t i = 0; i < lists.size(); ++i) {
    const auto ids = lists[i].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      absl::StatusOr<std::string> text = tokenizer->Decode(ids, skip);
      ASSERT_TRUE(text.ok()) << text.status();
      EXPECT_EQ(*text, entry()[skip ? "random_decode_skip" : "random_decode"][i].get<std::string>())
          << entry()["name"] << " random list " << i << " skip=" << skip << ": "
          << absl::StrJoin(ids, " ");
    }
  }
}

TEST_P(TokenizerGoldenTest, StreamingConcatenatesToTheFullDecode) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  std::vector<std::vector<int32_t>> lists;
  for (const Json& ids : entry()["encode_special"]) lists.push_back(ids);
  for (const Json& ids : entry()["random_ids"]) lists.push_back(ids);
  for (const auto& ids : lists) {
    for (bool skip : {false, true}) {
      absl::StatusOr<std::string> full = tokenizer->Decode(ids, skip);
      ASSERT_TRUE(full.ok()) << full.status();
      EXPECT_EQ(StreamAll(*tokenizer, ids, skip), *full)
          << entry()["name"] << " skip=" << skip << ": " << absl::StrJoin(ids, " ");
    }
  }
}

// A Tokenizer is shared by the server's threads: concurrent encodes (word cache, regexes) give
// the reference ids.
TEST_P(TokenizerGoldenTest, ConcurrentEncodesAgreeWithTheReference) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  const Json& texts = Golden()["texts"];
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t k = 0; k < texts.size(); ++k) {
          const size_t i = (k + static_cast<size_t>(t) * 7) % texts.size();
          absl::StatusOr<std::vector<int32_t>> ids =
              tokenizer->Encode(texts[i].get<std::string>(), false);
          if (!ids.ok() || *ids != entry()["encode"][i].get<std::vector<int32_t>>()) ++mismatches;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0) << entry()["name"];
}

std::string ParamName(const ::testing::TestParamInfo<size_t>& info) {
  std::string name = Golden()["tokenizers"][info.param]["name"];
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, TokenizerGoldenTest,
                         ::testing::Range<size_t>(0, Golden()["tokenizers"].size()), ParamName);

// A folder with both files uses tokenizer.json: "<s>" in text is the special token there, but
// plain characters to SentencePiece.
TEST(TokenizerLoadTest, FolderWithBothFilesUsesTokenizerJson) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Load(TestDataDir() / "tokenizers" / "llama-sp");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->kind(), "tokenizer.json (BPE)");
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode("<s>Hello</s>", true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GE(ids->size(), 3u);
  EXPECT_EQ((*ids)[0], 1);  // BOS from the template
  EXPECT_EQ((*ids)[1], 1);  // "<s>" in the text
  EXPECT_EQ(ids->back(), 2);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_FALSE((*tokenizer)->eos_id().has_value());

  absl::StatusOr<std::unique_ptr<Tokenizer>> model =
      Tokenizer::Load(TestDataDir() / "tokenizers" / "llama-sp" / "tokenizer.model");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->kind(), "tokenizer.model (SentencePiece)");
  ids = (*model)->Encode("<s>Hello</s>", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 1), 0);
}

}  // namespace
}  // namespace hgrn2

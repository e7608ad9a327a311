// Tests of TextStream against the reference libraries' goldens (tests/data/tokenizers/golden.json):
// its texts concatenate to the reference decode (special tokens skipped); with a stop string taken
// from that text, they stop exactly before its first occurrence; and the decoder's restart.
#include "engine/tokenizer/text_stream.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/base/file_io.h"
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

// What a stream shows for `ids`: the pushed texts and, unless it stopped, the finish.
struct Shown {
  std::string text;
  int stopped_at = -1;  // index of the token that completed a stop string (-1: none, or Finish)
};

Shown StreamAll(TextStream& stream, const std::vector<int32_t>& ids) {
  Shown shown;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (stream.Push(ids[i], shown.text)) {
      shown.stopped_at = static_cast<int>(i);
      break;
    }
  }
  if (shown.stopped_at < 0) stream.Finish(shown.text);
  return shown;
}

class TextStreamGoldenTest : public ::testing::TestWithParam<size_t> {
 protected:
  const Json& entry() const { return Golden()["tokenizers"][GetParam()]; }
  // The golden id lists: every text encoded with specials, and the random id lists.
  std::vector<std::vector<int32_t>> Lists() const {
    std::vector<std::vector<int32_t>> lists;
    for (const Json& ids : entry()["encode_special"]) lists.push_back(ids);
    for (const Json& ids : entry()["random_ids"]) lists.push_back(ids);
    return lists;
  }
};

// Without stop strings the text is the reference's decode with special tokens skipped: the
// golden decode_skip of each encoded text, and Decode of the random lists.
TEST_P(TextStreamGoldenTest, TextIsTheReferenceDecode) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  const Json& encoded = entry()["encode_special"];
  for (size_t i = 0; i < encoded.size(); ++i) {
    const auto ids = encoded[i].get<std::vector<int32_t>>();
    TextStream stream(tokenizer.get(), {}, {});
    const Shown shown = StreamAll(stream, ids);
    EXPECT_EQ(shown.text, entry()["decode_skip"][i].get<std::string>())
        << entry()["name"] << " text " << i;
    EXPECT_FALSE(stream.stopped());
    EXPECT_TRUE(stream.first_restart().ok()) << stream.first_restart();
  }
  const Json& random = entry()["random_ids"];
  for (size_t i = 0; i < random.size(); ++i) {
    const auto ids = random[i].get<std::vector<int32_t>>();
    TextStream stream(tokenizer.get(), {}, {});
    EXPECT_EQ(StreamAll(stream, ids).text, entry()["random_decode_skip"][i].get<std::string>())
        << entry()["name"] << " random list " << i << ": " << absl::StrJoin(ids, " ");
  }
}

// A stop string cut from the middle of the full text: what is shown is exactly the text before
// its first occurrence, the stop is reported, and the ids up to the one that completed it decode
// to text that holds it (text a decoder holds back, such as an unfinished character, can make
// that a token later than the first prefix whose full decode holds it).
TEST_P(TextStreamGoldenTest, StopsExactlyBeforeTheFirstOccurrence) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile(entry()["file"]);
  ASSERT_NE(tokenizer, nullptr);
  int checked = 0;
  for (const std::vector<int32_t>& ids : Lists()) {
    absl::StatusOr<std::string> full = tokenizer->Decode(ids, /*skip_special=*/true);
    ASSERT_TRUE(full.ok()) << full.status();
    if (full->size() < 6) continue;
    // Cut at character boundaries (the decode is valid UTF-8; U+FFFD counts as a character).
    size_t begin = full->size() / 3, end = begin + 3;
    while (begin > 0 && ((*full)[begin] & 0xC0) == 0x80) --begin;
    while (end < full->size() && ((*full)[end] & 0xC0) == 0x80) ++end;
    const std::string stop = full->substr(begin, end - begin);
    const size_t at = full->find(stop);
    TextStream stream(tokenizer.get(), {}, {"\x01never", stop});
    const Shown shown = StreamAll(stream, ids);
    ASSERT_TRUE(stream.stopped()) << entry()["name"] << ": " << absl::StrJoin(ids, " ");
    EXPECT_EQ(*stream.stop_string(), stop);
    EXPECT_EQ(shown.text, full->substr(0, at))
        << entry()["name"] << ": " << absl::StrJoin(ids, " ");
    // stopped_at < 0: the stop completed in the text held back until Finish.
    const std::vector<int32_t> upto(
        ids.begin(), shown.stopped_at < 0 ? ids.end() : ids.begin() + shown.stopped_at + 1);
    EXPECT_NE(tokenizer->Decode(upto, true)->find(stop), std::string::npos);
    std::string after;
    EXPECT_FALSE(stream.Push(ids.back(), after));
    stream.Finish(after);
    EXPECT_EQ(after, "") << "nothing is shown after a stop";
    ++checked;
  }
  EXPECT_GT(checked, 20) << entry()["name"];
}

std::string ParamName(const ::testing::TestParamInfo<size_t>& info) {
  std::string name = Golden()["tokenizers"][info.param]["name"];
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, TextStreamGoldenTest,
                         ::testing::Range<size_t>(0, Golden()["tokenizers"].size()), ParamName);

// The prompt's last ids are the decoder's context: a first token that starts a word keeps its
// leading space, as in the decode of prompt + token.
TEST(TextStreamTest, PromptIsTheContext) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile("llama-sp/tokenizer.json");
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<std::vector<int32_t>> prompt = tokenizer->Encode("Hello", false);
  absl::StatusOr<std::vector<int32_t>> word = tokenizer->Encode(" world", false);
  ASSERT_TRUE(prompt.ok() && word.ok());
  std::vector<int32_t> all = *prompt;
  all.insert(all.end(), word->begin(), word->end());
  TextStream stream(tokenizer.get(), *prompt, {});
  const Shown shown = StreamAll(stream, *word);
  EXPECT_EQ(*tokenizer->Decode(*prompt, true) + shown.text, *tokenizer->Decode(all, true));
}

// An id past the tokenizer's vocabulary (a model vocabulary padded beyond it) has no text; the
// stream restarts after it with the ids before it as context, says so, and the text around it
// comes out as the decode of the known ids.
TEST(TextStreamTest, RestartsAfterAnIdItCannotPlace) {
  std::unique_ptr<Tokenizer> tokenizer = LoadFile("llama-sp/tokenizer.json");
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<std::vector<int32_t>> a = tokenizer->Encode("Hello", false);
  absl::StatusOr<std::vector<int32_t>> b = tokenizer->Encode(" world", false);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<int32_t> ids = *a;
  ids.push_back(tokenizer->vocab_size() + 5);
  ids.insert(ids.end(), b->begin(), b->end());
  ids.push_back(tokenizer->vocab_size() + 6);
  TextStream stream(tokenizer.get(), {}, {});
  const Shown shown = StreamAll(stream, ids);
  std::vector<int32_t> known = *a;
  known.insert(known.end(), b->begin(), b->end());
  EXPECT_EQ(shown.text, *tokenizer->Decode(known, true));
  EXPECT_TRUE(absl::IsInvalidArgument(stream.first_restart())) << stream.first_restart();
}

// Without a tokenizer there is no text and no stop string.
TEST(TextStreamTest, WithoutATokenizerShowsNothing) {
  TextStream stream(nullptr, {1, 2}, {"a"});
  std::string text;
  EXPECT_FALSE(stream.Push(3, text));
  stream.Finish(text);
  EXPECT_EQ(text, "");
  EXPECT_FALSE(stream.stopped());
}

}  // namespace
}  // namespace hgrn2

// Tests of streaming detokenization: StreamDecoder on random ids (byte-fallback pieces split
// mid-character, special tokens) for every fixture tokenizer, leading spaces with a context, and
// StopStringMatcher with stop strings that straddle tokens.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::TestDataDir;

std::unique_ptr<Tokenizer> Load(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Load(TestDataDir() / "tokenizers" / name);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// Every delta, in order; fails the test on an error.
std::vector<std::string> Deltas(StreamDecoder& stream, const std::vector<int32_t>& ids) {
  std::vector<std::string> deltas;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> delta = stream.Push(id);
    EXPECT_TRUE(delta.ok()) << delta.status();
    deltas.push_back(delta.ok() ? *delta : "");
  }
  absl::StatusOr<std::string> rest = stream.Finish();
  EXPECT_TRUE(rest.ok()) << rest.status();
  deltas.push_back(rest.ok() ? *rest : "");
  return deltas;
}

class StreamDecoderRandomTest : public ::testing::TestWithParam<std::string> {};

// Random id sequences, half of their ids byte-fallback pieces (so characters split across
// tokens, and invalid bytes), the rest any token including specials: the deltas concatenate to
// Decode of the whole sequence, with and without a context, and each delta is valid UTF-8.
TEST_P(StreamDecoderRandomTest, DeltasConcatenateToTheFullDecode) {
  std::unique_ptr<Tokenizer> tokenizer = Load(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  std::vector<int32_t> joining;  // byte-fallback ids
  for (int32_t id = 0; id < tokenizer->vocab_size(); ++id) {
    if (tokenizer->MayJoinNext(id)) joining.push_back(id);
  }
  std::mt19937 rng(1234);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int length = 1 + static_cast<int>(rng() % 40);
    std::vector<int32_t> ids;
    for (int i = 0; i < length; ++i) {
      const bool byte = !joining.empty() && rng() % 2 == 0;
      ids.push_back(byte ? joining[rng() % joining.size()]
                         : static_cast<int32_t>(rng() % tokenizer->vocab_size()));
    }
    const bool skip_special = trial % 2 == 0;
    const size_t context_size = trial % 3 == 0 ? 0 : rng() % (ids.size() + 1);
    const std::vector<int32_t> context(ids.begin(), ids.begin() + context_size);
    const std::vector<int32_t> rest(ids.begin() + context_size, ids.end());
    absl::StatusOr<std::string> full = tokenizer->Decode(ids, skip_special);
    absl::StatusOr<std::string> before = tokenizer->Decode(context, skip_special);
    ASSERT_TRUE(full.ok() && before.ok());
    // The streamed text is defined where the context's text is a prefix of the whole's (it is
    // not when the context ends inside a byte-fallback character).
    if (full->compare(0, before->size(), *before) != 0) continue;
    StreamDecoder stream(*tokenizer, skip_special, context);
    std::string streamed;
    for (const std::string& delta : Deltas(stream, rest)) {
      EXPECT_FALSE(unicode::FindInvalidUtf8(delta).has_value());
      streamed += delta;
    }
    EXPECT_EQ(streamed, full->substr(before->size()))
        << GetParam() << " skip_special=" << skip_special << " context " << context_size << " ids "
        << absl::StrJoin(ids, " ");
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamDecoderRandomTest,
                         ::testing::Values("llama-sp", "llama-sp/tokenizer.model", "llama-legacy",
                                           "bytelevel", "bytelevel-split", "metaspace-always",
                                           "metaspace-never"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

// A character the vocabulary lacks is spelled in byte-fallback pieces; it appears in one delta,
// whole, once its last byte is in.
TEST(StreamDecoderTest, ByteFallbackCharacterAppearsWhole) {
  for (const char* name : {"llama-sp", "llama-sp/tokenizer.model"}) {
    std::unique_ptr<Tokenizer> tokenizer = Load(name);
    ASSERT_NE(tokenizer, nullptr);
    const std::string text = "clef \xF0\x9D\x84\x9E sign";  // U+1D11E, not in the training text
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    int joining = 0;
    for (int32_t id : *ids) joining += tokenizer->MayJoinNext(id) ? 1 : 0;
    ASSERT_EQ(joining, 4) << name << ": expected the 4 bytes as pieces";
    StreamDecoder stream(*tokenizer, true);
    std::string streamed;
    int with_clef = 0;
    for (const std::string& delta : Deltas(stream, *ids)) {
      EXPECT_EQ(delta.find(unicode::kReplacementChar), std::string::npos) << name;
      if (delta.find("\xF0\x9D\x84\x9E") != std::string::npos) ++with_clef;
      streamed += delta;
    }
    EXPECT_EQ(with_clef, 1) << name;
    EXPECT_EQ(streamed, text) << name;
  }
}

// Byte-level BPE splits an emoji's bytes over tokens: no delta holds a broken character.
TEST(StreamDecoderTest, ByteLevelEmojiNeverBroken) {
  std::unique_ptr<Tokenizer> tokenizer = Load("bytelevel");
  ASSERT_NE(tokenizer, nullptr);
  const std::string text =
      "family \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 and \xF0\x9F\x91\x8D";
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  StreamDecoder stream(*tokenizer, true);
  std::string streamed;
  int empty = 0;
  for (const std::string& delta : Deltas(stream, *ids)) {
    EXPECT_EQ(delta.find(unicode::kReplacementChar), std::string::npos);
    EXPECT_FALSE(unicode::FindInvalidUtf8(delta).has_value());
    empty += delta.empty() ? 1 : 0;
    streamed += delta;
  }
  EXPECT_GT(empty, 1);  // some tokens held a partial character back
  EXPECT_EQ(streamed, text);
}

// Metaspace's leading space: the first token of a decode loses it, a token after the context
// keeps it, as in the decode of context and new ids together.
TEST(StreamDecoderTest, LeadingSpaceFollowsTheContext) {
  for (const char* name : {"llama-sp", "llama-legacy", "llama-sp/tokenizer.model"}) {
    std::unique_ptr<Tokenizer> tokenizer = Load(name);
    ASSERT_NE(tokenizer, nullptr);
    absl::StatusOr<std::vector<int32_t>> prompt = tokenizer->Encode("Hello", true);
    absl::StatusOr<std::vector<int32_t>> whole = tokenizer->Encode("Hello world", true);
    ASSERT_TRUE(prompt.ok() && whole.ok());
    ASSERT_EQ(std::vector<int32_t>(whole->begin(), whole->begin() + prompt->size()), *prompt);
    const std::vector<int32_t> reply(whole->begin() + prompt->size(), whole->end());
    StreamDecoder after_prompt(*tokenizer, true, *prompt);
    EXPECT_EQ(absl::StrJoin(Deltas(after_prompt, reply), ""), " world") << name;
    StreamDecoder alone(*tokenizer, true);
    EXPECT_EQ(absl::StrJoin(Deltas(alone, reply), ""), "world") << name;
  }
}

TEST(StreamDecoderTest, RefusesAnIdOutsideTheVocabularyAndGoesOn) {
  std::unique_ptr<Tokenizer> tokenizer = Load("llama-sp");
  ASSERT_NE(tokenizer, nullptr);
  StreamDecoder stream(*tokenizer, true);
  ExpectError(stream.Push(tokenizer->vocab_size()).status(), absl::StatusCode::kInvalidArgument,
              {"token id 1000", "not in the vocabulary"});
  ExpectError(stream.Push(-1).status(), absl::StatusCode::kInvalidArgument, {"token id -1"});
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode("Hi there", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(absl::StrJoin(Deltas(stream, *ids), ""), "Hi there");

  StreamDecoder bad_context(*tokenizer, true, std::vector<int32_t>{5, 5000});
  ExpectError(bad_context.Push(5).status(), absl::StatusCode::kInvalidArgument, {"context"});
}

// ---------------------------------------------------------------------------------------------
struct Collected {
  std::string text;
  bool stopped = false;
  std::string stop;
  int pushes_after_stop_with_text = 0;
};

Collected Feed(StopStringMatcher& matcher, const std::vector<std::string>& deltas) {
  Collected out;
  for (const std::string& delta : deltas) {
    StopStringMatcher::Result result = matcher.Push(delta);
    if (out.stopped && !result.text.empty()) ++out.pushes_after_stop_with_text;
    out.text += result.text;
    if (result.stopped) {
      out.stopped = true;
      out.stop = result.stop_string;
    }
  }
  out.text += matcher.Finish();
  return out;
}

TEST(StopStringMatcherTest, StopStraddlingDeltasEndsTheTextBeforeIt) {
  StopStringMatcher matcher({"STOP"});
  StopStringMatcher::Result first = matcher.Push("Hello wo");
  EXPECT_EQ(first.text, "Hello wo");
  StopStringMatcher::Result second = matcher.Push("rld! ST");
  EXPECT_EQ(second.text, "rld! ");  // "ST" may begin STOP: held
  EXPECT_FALSE(second.stopped);
  StopStringMatcher::Result third = matcher.Push("OP and more");
  EXPECT_TRUE(third.stopped);
  EXPECT_EQ(third.stop_string, "STOP");
  EXPECT_EQ(third.text, "");
  EXPECT_EQ(matcher.Push("later").text, "");
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopStringMatcherTest, HeldPrefixIsReleasedWhenItIsNotAStop) {
  StopStringMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("a ST").text, "a ");
  EXPECT_EQ(matcher.Push("AR").text, "STAR");
  EXPECT_EQ(matcher.Push("xSTO").text, "x");
  EXPECT_EQ(matcher.Finish(), "STO");  // end of stream: the held text is shown
}

TEST(StopStringMatcherTest, EarliestStopWinsAndFirstListedOnATie) {
  Collected a = [] {
    StopStringMatcher matcher({"world", "lo w"});
    return Feed(matcher, {"hel", "lo wor", "ld"});
  }();
  EXPECT_TRUE(a.stopped);
  EXPECT_EQ(a.stop, "lo w");
  EXPECT_EQ(a.text, "hel");
  Collected b = [] {
    StopStringMatcher matcher({"ab", "a", ""});
    return Feed(matcher, {"xa", "b"});
  }();
  EXPECT_TRUE(b.stopped);
  EXPECT_EQ(b.stop, "a");  // "a" is complete at the first delta, before "ab" can be
  EXPECT_EQ(b.text, "x");
  EXPECT_EQ(b.pushes_after_stop_with_text, 0);
}

TEST(StopStringMatcherTest, NoStopStringsPassesEverythingThrough) {
  StopStringMatcher matcher({});
  Collected out = Feed(matcher, {"a", "b\xC3\xA9", ""});
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.text, "ab\xC3\xA9");
}

// End to end: ids one at a time through StreamDecoder and StopStringMatcher; the stop string
// spans several tokens, and the text before it is exactly what is shown.
TEST(StopStringMatcherTest, WithStreamDecoderOnTokensThatSplitTheStop) {
  for (const char* name : {"llama-sp", "bytelevel"}) {
    std::unique_ptr<Tokenizer> tokenizer = Load(name);
    ASSERT_NE(tokenizer, nullptr);
    const std::string text = "The quick brown fox jumps over the lazy dog";
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, false);
    ASSERT_TRUE(ids.ok());
    StreamDecoder stream(*tokenizer, true);
    StopStringMatcher matcher({"x jumps ov", "zebra"});
    std::string shown, decoded;
    bool stopped = false;
    int deltas_in_stop = 0;  // deltas holding part of the stop string (at bytes 18 to 28)
    for (int32_t id : *ids) {
      absl::StatusOr<std::string> delta = stream.Push(id);
      ASSERT_TRUE(delta.ok());
      if (!delta->empty() && decoded.size() < 28 && decoded.size() + delta->size() > 18) {
        ++deltas_in_stop;
      }
      decoded += *delta;
      StopStringMatcher::Result result = matcher.Push(*delta);
      shown += result.text;
      if (result.stopped) {
        stopped = true;
        break;
      }
    }
    EXPECT_TRUE(stopped) << name;
    EXPECT_EQ(shown, "The quick brown fo") << name;
    EXPECT_GE(deltas_in_stop, 2) << name << ": the stop string should span tokens";
  }
}

}  // namespace
}  // namespace hgrn2

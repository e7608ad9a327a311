// CompletionAnswer: the OpenAI answer of one completions or chat call, built as its prompts' echo
// and samples' news arrive: a stream's server-sent events, or the whole answer at the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/core/generation.h"
#include "server/core/scoring.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_requests.h"
#include "server/http/openai_responses.h"

namespace hgrn2::server {

// Not thread-safe: the call's pump uses it, one thread at a time. `model` and `plan` outlive it.
class CompletionAnswer {
 public:
  CompletionAnswer(const OpenAiModel& model, const CompletionPlan& plan,
                   absl::string_view request_id);

  void SetPromptTokens(int64_t prompt_tokens) { prompt_tokens_ = prompt_tokens; }

  // The echoed prompt of prompt p, for each of its samples (completions only); `score` holds its
  // log-probabilities when asked for. Stream events are appended to `events`.
  void TakeEcho(size_t p, const ScoreOutcome* score, std::string& events);
  // One sample's news (of prompt p); stream events are appended to `events`.
  void TakeUpdate(size_t p, const SampleUpdate& update, std::string& events);

  // The stream's last event before [DONE] with stream_options.include_usage: the usage alone.
  std::string UsageEvent() const;
  // The whole answer (not streamed), once every sample has finished.
  HttpResponse Whole() const;

 private:
  // One answer choice (prompt p, sample s at p * n + s).
  struct Choice {
    int32_t index = 0;
    std::string text;  // the whole answer's
    std::optional<TokenTexts> texts;
    LegacyLogprobs legacy;      // the whole answer's (completions)
    Json chat = Json::array();  // the whole answer's (chat)
    int64_t offset = 0;         // code points of the token texts so far (text_offset)
    bool role_sent = false;
    std::optional<SampleFinish> finish;
    std::optional<int32_t> last_token;
  };

  Json Header(const char* object) const;
  Json Usage() const;
  // The stream's common event, a text delta without logprobs or a finish, written without a JSON
  // tree (the hot path: one per update of every stream): the bytes SseEvent writes for it.
  std::string TextEvent(int32_t index, const std::string& text);
  std::string ChatChunk(int32_t index, Json delta, Json logprobs, const Choice* finished) const;
  // With sessions, the revisions the gRPC API reports: the one resumed and the one saved.
  static void AddRevisions(const SampleFinish& finish, Json& choice);
  // vLLM's stop_reason: the stop string, or the stop token id; null for EOS and length.
  static Json StopReason(const Choice& choice);

  const OpenAiModel& model_;
  const CompletionPlan& plan_;
  const bool chat_;
  const std::string id_;
  const int64_t created_;
  std::vector<Choice> choices_;
  int64_t prompt_tokens_ = 0;
  int64_t cached_tokens_ = 0;
  int64_t delivered_tokens_ = 0;  // tokens handed out so far, every choice's
  std::string event_prefix_;      // TextEvent's start, made once
};

}  // namespace hgrn2::server

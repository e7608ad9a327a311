// CompletionAnswer: OpenAI's completion and chat answer formats (see completion_answer.h).
#include "server/http/completion_answer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace hgrn2::server {

CompletionAnswer::CompletionAnswer(const OpenAiModel& model, const CompletionPlan& plan,
                                   absl::string_view request_id)
    : model_(model),
      plan_(plan),
      chat_(plan.kind == ApiKind::kChat),
      id_(absl::StrCat(chat_ ? "chatcmpl-" : "cmpl-", request_id)),
      created_(absl::ToUnixSeconds(absl::Now())) {
  const size_t n = static_cast<size_t>(plan_.generation.num_samples);
  choices_.resize(plan_.prompts.size() * n);
  for (size_t i = 0; i < choices_.size(); ++i) choices_[i].index = static_cast<int32_t>(i);
}

std::string CompletionAnswer::UsageEvent() const {
  Json usage = Header(chat_ ? "chat.completion.chunk" : "text_completion");
  usage["choices"] = Json::array();
  usage["usage"] = Usage();
  return SseEvent(usage);
}

Json CompletionAnswer::Header(const char* object) const {
  Json out = {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_.name}};
  if (!model_.fingerprint.empty()) out["system_fingerprint"] = model_.fingerprint;
  return out;
}

Json CompletionAnswer::Usage() const {
  int64_t completion = 0;
  for (const Choice& choice : choices_) {
    if (choice.finish) completion += choice.finish->generated_tokens;
  }
  return UsageJson(prompt_tokens_, completion, cached_tokens_);
}

void CompletionAnswer::TakeEcho(size_t p, const ScoreOutcome* score, std::string& events) {
  const PlannedPrompt& prompt = plan_.prompts[p];
  const Tokenizer* tokenizer = model_.context->tokenizer;
  const size_t n = static_cast<size_t>(plan_.generation.num_samples);
  std::string text;
  LegacyLogprobs logprobs;
  int64_t offset = 0;
  if (plan_.echo) {
    text = prompt.text;
    if (text.empty() && tokenizer != nullptr && !prompt.ids.empty()) {
      absl::StatusOr<std::string> decoded = tokenizer->Decode(prompt.ids, false);
      if (decoded.ok()) text = *std::move(decoded);
    }
    if (plan_.logprobs) {
      TokenTexts texts(tokenizer, {});
      for (size_t i = 0; i < prompt.ids.size(); ++i) {
        std::optional<float> logprob;
        absl::Span<const TokenLogprob> top;
        if (i > 0 && score != nullptr) {
          logprob = score->tokens[i - 1].logprob;
          top = score->tokens[i - 1].top;
        }
        TokenEntry entry = MakeTokenEntry(texts, prompt.ids[i], logprob, top, i > 0);
        logprobs.Add(entry, offset);
        offset += CodePoints(entry.text);
      }
    }
  }
  for (size_t s = 0; s < n; ++s) {
    Choice& choice = choices_[p * n + s];
    choice.offset = offset;
    if (plan_.logprobs) choice.texts.emplace(tokenizer, prompt.ids);
    if (!plan_.echo) continue;
    if (!plan_.generate) {
      // Only the prompt: it ends here, as vLLM ends it.
      choice.finish.emplace();
      choice.finish->reason = FinishReason::kLength;
      choice.finish->prompt_tokens = static_cast<int64_t>(prompt.ids.size());
    }
    if (plan_.stream) {
      Json chunk = Header("text_completion");
      Json c = {{"index", choice.index},
                {"text", text},
                {"logprobs", plan_.logprobs ? logprobs.ToJson() : Json(nullptr)},
                {"finish_reason", choice.finish ? Json("length") : Json(nullptr)}};
      chunk["choices"] = Json::array({std::move(c)});
      events += SseEvent(chunk);
    } else {
      choice.text = text;
      choice.legacy = logprobs;
    }
  }
}

void CompletionAnswer::TakeUpdate(size_t p, const SampleUpdate& update, std::string& events) {
  const size_t n = static_cast<size_t>(plan_.generation.num_samples);
  Choice& choice = choices_[p * n + static_cast<size_t>(update.index)];
  LegacyLogprobs legacy;
  Json chat = Json::array();
  if (plan_.logprobs) {
    for (const SampledToken& token : update.tokens) {
      TokenEntry entry = MakeTokenEntry(*choice.texts, token.id, token.logprob, token.top, true);
      if (chat_) {
        chat.push_back(ChatLogprob(entry));
      } else {
        legacy.Add(entry, choice.offset);
        choice.offset += CodePoints(entry.text);
      }
    }
  }
  if (!update.tokens.empty()) choice.last_token = update.tokens.back().id;
  delivered_tokens_ += static_cast<int64_t>(update.tokens.size());
  if (update.finish) {
    choice.finish = update.finish;
    if (update.index == 0) cached_tokens_ += update.finish->cached_prompt_tokens;
  }
  if (!plan_.stream) {
    choice.text += update.text;
    if (plan_.logprobs) {
      if (chat_) {
        for (Json& entry : chat) choice.chat.push_back(std::move(entry));
      } else {
        choice.legacy.Extend(legacy);
      }
    }
    return;
  }
  if (chat_) {
    if (!choice.role_sent) {
      choice.role_sent = true;
      events +=
          ChatChunk(choice.index, Json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr);
    }
    if (!plan_.logprobs && !update.text.empty()) {
      events += TextEvent(choice.index, update.text);
    } else if (!update.text.empty() || !chat.empty()) {
      events +=
          ChatChunk(choice.index, Json{{"content", update.text}},
                    plan_.logprobs ? Json{{"content", std::move(chat)}} : Json(nullptr), nullptr);
    }
    if (update.finish) {
      events += ChatChunk(choice.index, Json::object(), nullptr, &choice);
    }
    return;
  }
  if (!plan_.logprobs && !update.finish) {
    events += TextEvent(choice.index, update.text);
    return;
  }
  Json chunk = Header("text_completion");
  Json c = {{"index", choice.index},
            {"text", update.text},
            {"logprobs", plan_.logprobs ? legacy.ToJson() : Json(nullptr)},
            {"finish_reason",
             update.finish ? Json(FinishReasonText(update.finish->reason)) : Json(nullptr)}};
  if (update.finish) {
    c["stop_reason"] = StopReason(choice);
    AddRevisions(*update.finish, c);
  }
  chunk["choices"] = Json::array({std::move(c)});
  if (plan_.continuous_usage)
    chunk["usage"] = UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_);
  events += SseEvent(chunk);
}

std::string CompletionAnswer::TextEvent(int32_t index, const std::string& text) {
  if (event_prefix_.empty()) {
    // `data: {"id":...,"model":...,"choices":[{"index":`
    std::string header = Header(chat_ ? "chat.completion.chunk" : "text_completion").dump();
    header.pop_back();
    event_prefix_ = absl::StrCat("data: ", header, R"(,"choices":[{"index":)");
  }
  std::string out = event_prefix_;
  absl::StrAppend(&out, index, chat_ ? R"(,"delta":{"content":)" : R"(,"text":)",
                  Json(text).dump(-1, ' ', false, Json::error_handler_t::replace), chat_ ? "}" : "",
                  R"(,"logprobs":null,"finish_reason":null}])");
  if (plan_.continuous_usage) {
    absl::StrAppend(&out, R"(,"usage":)",
                    UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_).dump());
  }
  out += "}\n\n";
  return out;
}

std::string CompletionAnswer::ChatChunk(int32_t index, Json delta, Json logprobs,
                                        const Choice* finished) const {
  Json chunk = Header("chat.completion.chunk");
  Json c = {{"index", index},
            {"delta", std::move(delta)},
            {"logprobs", std::move(logprobs)},
            {"finish_reason", finished != nullptr ? Json(FinishReasonText(finished->finish->reason))
                                                  : Json(nullptr)}};
  if (finished != nullptr) {
    c["stop_reason"] = StopReason(*finished);
    AddRevisions(*finished->finish, c);
  }
  chunk["choices"] = Json::array({std::move(c)});
  if (plan_.continuous_usage) {
    chunk["usage"] = UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_);
  }
  return SseEvent(chunk);
}

void CompletionAnswer::AddRevisions(const SampleFinish& finish, Json& choice) {
  if (finish.resumed_revision != 0) choice["resumed_revision"] = finish.resumed_revision;
  if (finish.saved_revision != 0) choice["saved_revision"] = finish.saved_revision;
}

Json CompletionAnswer::StopReason(const Choice& choice) {
  const SampleFinish& finish = *choice.finish;
  if (!finish.stop_string.empty()) return finish.stop_string;
  if (finish.reason == FinishReason::kStop && choice.last_token) return *choice.last_token;
  return nullptr;
}

HttpResponse CompletionAnswer::Whole() const {
  Json out = Header(chat_ ? "chat.completion" : "text_completion");
  Json choices = Json::array();
  for (const Choice& choice : choices_) {
    const char* reason = choice.finish ? FinishReasonText(choice.finish->reason) : "length";
    Json c = {{"index", choice.index}};
    if (chat_) {
      c["message"] = Json{{"role", "assistant"}, {"content", choice.text}};
      c["logprobs"] = plan_.logprobs ? Json{{"content", choice.chat}} : Json(nullptr);
    } else {
      c["text"] = choice.text;
      c["logprobs"] = plan_.logprobs ? choice.legacy.ToJson() : Json(nullptr);
    }
    c["finish_reason"] = reason;
    c["stop_reason"] = choice.finish ? StopReason(choice) : Json(nullptr);
    if (choice.finish) AddRevisions(*choice.finish, c);
    choices.push_back(std::move(c));
  }
  out["choices"] = std::move(choices);
  out["usage"] = Usage();
  HttpResponse response;
  response.body = out.dump(-1, ' ', false, Json::error_handler_t::replace);
  return response;
}

}  // namespace hgrn2::server

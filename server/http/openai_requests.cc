// OpenAI request bodies into the request core's types (see openai_requests.h).
#include "server/http/openai_requests.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/core/request_checks.h"
#include "server/http/json_fields.h"
#include "server/http/openai_prompts.h"

namespace hgrn2::server {
namespace {

using json_fields::Bool;
using json_fields::Field;
using json_fields::Integer;
using json_fields::IntegerIn;
using json_fields::IntegerValue;
using json_fields::Number;
using json_fields::ParseBody;
using json_fields::String;

// OpenAI's default max_tokens for /v1/completions.
constexpr int32_t kCompletionDefaultMaxTokens = 16;
// logit_bias values, as OpenAI bounds them.
constexpr double kMaxBias = 100.0;

// An engine check's "field must be ..." as "field: must be ...", so the error names it as param.
absl::Status AsFieldError(const absl::Status& status) {
  const absl::string_view message = status.message();
  const size_t space = message.find(' ');
  if (status.ok() || space == absl::string_view::npos) return status;
  return absl::Status(status.code(),
                      absl::StrCat(message.substr(0, space), ":", message.substr(space)));
}

absl::Status CheckModel(const Json& body, const OpenAiModel& model) {
  HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> name, String(body, "model"));
  if (name && *name != model.name) {
    return absl::NotFoundError(absl::StrCat("model: \"", *name,
                                            "\" is not served here (this server serves \"",
                                            model.name, "\"; see GET /v1/models)"));
  }
  return absl::OkStatus();
}

// Fields we do not implement: refused when they ask for something, so nobody gets a silently
// different answer.
absl::Status RefuseUnsupported(const Json& body, ApiKind kind) {
  if (const Json& suffix = Field(body, "suffix");
      !suffix.is_null() && !(suffix.is_string() && suffix.get<std::string>().empty())) {
    return Invalid("suffix", "not supported (no insertion; generate from the prompt instead)");
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> best_of, Integer(body, "best_of"));
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, "n"));
  if (best_of && *best_of != n.value_or(1)) {
    return Invalid("best_of", "not supported unless equal to n (every sample is returned)");
  }
  if (const Json& tools = Field(body, "tools"); !tools.is_null() && !tools.empty()) {
    return Invalid("tools", "not supported: this server does no tool calling");
  }
  if (const Json& functions = Field(body, "functions");
      !functions.is_null() && !functions.empty()) {
    return Invalid("functions", "not supported: this server does no function calling");
  }
  if (const Json& format = Field(body, "response_format"); !format.is_null()) {
    if (!format.is_object() || Field(format, "type") != "text") {
      return Invalid("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> min_tokens, Integer(body, "min_tokens"));
  if (min_tokens.value_or(0) != 0) return Invalid("min_tokens", "not supported");
  for (const char* name : {"use_beam_search", "include_stop_str_in_output"}) {
    HGRN2_ASSIGN_OR_RETURN(std::optional<bool> on, Bool(body, name));
    if (on.value_or(false)) return Invalid(name, "not supported");
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> skip_special, Bool(body, "skip_special_tokens"));
  if (!skip_special.value_or(true)) {
    return Invalid("skip_special_tokens", "only true is supported (special tokens are not text)");
  }
  if (kind == ApiKind::kChat) {
    HGRN2_ASSIGN_OR_RETURN(std::optional<bool> echo, Bool(body, "echo"));
    if (echo.value_or(false)) return Invalid("echo", "not supported for chat completions");
    HGRN2_ASSIGN_OR_RETURN(std::optional<bool> cont, Bool(body, "continue_final_message"));
    if (cont.value_or(false)) return Invalid("continue_final_message", "not supported");
  }
  return absl::OkStatus();
}

// stop: a string or a list of strings.
absl::StatusOr<std::vector<std::string>> StopStrings(const Json& body) {
  const Json& stop = Field(body, "stop");
  std::vector<std::string> out;
  if (stop.is_null()) return out;
  if (stop.is_string()) {
    out.push_back(stop.get<std::string>());
    return out;
  }
  if (!stop.is_array()) return Invalid("stop", "must be a string or a list of strings");
  for (size_t i = 0; i < stop.size(); ++i) {
    if (!stop[i].is_string()) return Invalid(absl::StrCat("stop[", i, "]"), "must be a string");
    out.push_back(stop[i].get<std::string>());
  }
  return out;
}

// Sampling, stopping, n, priority and sessions: what completions and chat share.
absl::Status PlanGeneration(const Json& body, const OpenAiModel& model, int32_t default_max_tokens,
                            const char* max_tokens_field, CompletionPlan& plan) {
  const ModelContext& context = *model.context;
  const RequestLimits& limits = context.limits;
  PreparedGeneration& out = plan.generation;
  SamplingParams& sampling = out.engine.sampling;
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> temperature, Number(body, "temperature"));
  sampling.temperature = static_cast<float>(temperature.value_or(1.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> top_p, Number(body, "top_p"));
  sampling.top_p = static_cast<float>(top_p.value_or(1.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> top_k,
                         IntegerIn(body, "top_k", -1, std::numeric_limits<int32_t>::max()));
  sampling.top_k = top_k.value_or(0) < 0 ? 0 : static_cast<int32_t>(top_k.value_or(0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> min_p, Number(body, "min_p"));
  sampling.min_p = static_cast<float>(min_p.value_or(0.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> repetition, Number(body, "repetition_penalty"));
  sampling.repetition_penalty = static_cast<float>(repetition.value_or(1.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> presence, Number(body, "presence_penalty"));
  sampling.presence_penalty = static_cast<float>(presence.value_or(0.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<double> frequency, Number(body, "frequency_penalty"));
  sampling.frequency_penalty = static_cast<float>(frequency.value_or(0.0));
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> seed, Integer(body, "seed"));
  if (seed) sampling.seed = static_cast<uint64_t>(*seed);
  if (const Json& bias = Field(body, "logit_bias"); !bias.is_null()) {
    if (!bias.is_object()) {
      return Invalid("logit_bias", "must be an object of token id (a string) to bias");
    }
    if (static_cast<int64_t>(bias.size()) > limits.max_logit_bias) {
      return OverLimit("logit_bias", static_cast<int64_t>(bias.size()), "entries",
                       limits.max_logit_bias, "--max-logit-bias");
    }
    for (const auto& [key, value] : bias.items()) {
      int32_t id = 0;
      const std::string field = absl::StrCat("logit_bias[\"", key, "\"]");
      if (!absl::SimpleAtoi(key, &id)) return Invalid(field, "the key must be a token id");
      if (!value.is_number()) return Invalid(field, "must be a number");
      const double b = value.get<double>();
      if (!(b >= -kMaxBias && b <= kMaxBias)) {
        return Invalid(field, absl::StrCat("must be in [-100, 100], got ", b));
      }
      sampling.logit_bias.emplace_back(id, static_cast<float>(b));
    }
    std::sort(sampling.logit_bias.begin(), sampling.logit_bias.end());
  }
  if (plan.logprobs) sampling.num_top_logprobs = *plan.logprobs;
  HGRN2_RETURN_IF_ERROR(AsFieldError(sampling.Validate(context.config->vocab_size)));

  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens,
                         IntegerIn(body, max_tokens_field, 0, std::numeric_limits<int32_t>::max()));
  const int64_t wanted = max_tokens.value_or(default_max_tokens);
  if (wanted > limits.max_new_tokens) {
    return AboveMaximum(max_tokens_field, static_cast<uint64_t>(wanted), limits.max_new_tokens,
                        "--max-new-tokens");
  }
  if (wanted == 0) {
    if (!plan.echo) {
      return Invalid(max_tokens_field, "must be at least 1 (0 only with echo, to score a prompt)");
    }
    plan.generate = false;
  }
  StoppingParams& stopping = out.engine.stopping;
  stopping.max_new_tokens = static_cast<int32_t>(std::max<int64_t>(wanted, 1));
  if (const Json& ids = Field(body, "stop_token_ids"); !ids.is_null()) {
    if (!ids.is_array()) return Invalid("stop_token_ids", "must be a list of token ids");
    if (static_cast<int64_t>(ids.size()) > limits.max_stop_token_ids) {
      return OverLimit("stop_token_ids", static_cast<int64_t>(ids.size()), "ids",
                       limits.max_stop_token_ids, "--max-stop-token-ids");
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> id,
                             IntegerValue(ids[i], absl::StrCat("stop_token_ids[", i, "]")));
      // Out of int32's range is out of the vocabulary: -1 is refused by name below.
      const int64_t value = id.value_or(-1);
      stopping.stop_token_ids.push_back(value < 0 || value > std::numeric_limits<int32_t>::max()
                                            ? -1
                                            : static_cast<int32_t>(value));
    }
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, Bool(body, "ignore_eos"));
  stopping.ignore_eos = ignore_eos.value_or(false);
  HGRN2_RETURN_IF_ERROR(AsFieldError(stopping.Validate(context.config->vocab_size)));
  HGRN2_ASSIGN_OR_RETURN(out.stop_strings, StopStrings(body));
  HGRN2_RETURN_IF_ERROR(CheckStopStrings(out.stop_strings, "stop", context));

  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, "n"));
  if (n && *n < 1) return Invalid("n", absl::StrCat("must be at least 1, got ", *n));
  if (n && *n > limits.max_samples) {
    return AboveMaximum("n", static_cast<uint64_t>(*n), limits.max_samples, "--max-n");
  }
  out.num_samples = static_cast<int32_t>(n.value_or(1));
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> priority,
                         IntegerIn(body, "priority", std::numeric_limits<int32_t>::min(),
                                   std::numeric_limits<int32_t>::max()));
  out.engine.priority = static_cast<int32_t>(priority.value_or(0));

  HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> session_id, String(body, "session_id"));
  if (session_id && !session_id->empty()) {
    HGRN2_RETURN_IF_ERROR(CheckSessionId(*session_id, "session_id"));
    out.session_id = *session_id;
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> save_as, String(body, "save_session_as"));
  if (save_as && !save_as->empty()) {
    HGRN2_RETURN_IF_ERROR(CheckSessionId(*save_as, "save_session_as"));
    out.save_session_as = *save_as;
    if (out.num_samples > 1) {
      return Invalid("save_session_as", "cannot save a session from n > 1 samples");
    }
  }
  // What the save may replace, as the gRPC API's save_if_revision and save_overwrite.
  HGRN2_ASSIGN_OR_RETURN(
      std::optional<int64_t> if_revision,
      IntegerIn(body, "save_if_revision", 0, std::numeric_limits<int64_t>::max()));
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> overwrite, Bool(body, "save_overwrite"));
  if (if_revision || overwrite.value_or(false)) {
    const char* field = if_revision ? "save_if_revision" : "save_overwrite";
    if (out.save_session_as.empty()) return Invalid(field, "needs save_session_as");
    if (if_revision && overwrite.value_or(false)) {
      return Invalid("save_if_revision", "cannot be set together with save_overwrite");
    }
    if (if_revision) out.save_options.if_revision = static_cast<uint64_t>(*if_revision);
    out.save_options.overwrite = overwrite.value_or(false);
  }
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> stream, Bool(body, "stream"));
  plan.stream = stream.value_or(false);
  if (const Json& options = Field(body, "stream_options"); !options.is_null()) {
    if (!options.is_object()) return Invalid("stream_options", "must be an object");
    HGRN2_ASSIGN_OR_RETURN(std::optional<bool> usage, Bool(options, "include_usage"));
    plan.include_usage = usage.value_or(false);
    HGRN2_ASSIGN_OR_RETURN(std::optional<bool> continuous, Bool(options, "continuous_usage_stats"));
    plan.continuous_usage = continuous.value_or(false);
  }
  if (!out.session_id.empty() || !out.save_session_as.empty()) {
    if (plan.prompts.size() > 1) {
      return Invalid(out.session_id.empty() ? "save_session_as" : "session_id",
                     "needs a single prompt");
    }
    if (plan.echo && plan.logprobs) {
      return Invalid("echo", "prompt log-probabilities are not given with session_id");
    }
  }
  return absl::OkStatus();
}

// How many top alternatives a log-probability field asks for: an integer in [0, --max-logprobs].
absl::StatusOr<std::optional<int64_t>> AlternativesCount(const Json& body, const char* field,
                                                         const RequestLimits& limits) {
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> count,
                         IntegerIn(body, field, 0, std::numeric_limits<int32_t>::max()));
  if (count && *count > limits.max_logprobs) {
    return AboveMaximum(field, static_cast<uint64_t>(*count), limits.max_logprobs,
                        "--max-logprobs");
  }
  return count;
}

}  // namespace

absl::StatusOr<CompletionPlan> PlanCompletion(absl::string_view body_text,
                                              const OpenAiModel& model) {
  HGRN2_ASSIGN_OR_RETURN(Json body, ParseBody(body_text));
  HGRN2_RETURN_IF_ERROR(CheckModel(body, model));
  HGRN2_RETURN_IF_ERROR(RefuseUnsupported(body, ApiKind::kCompletion));
  const ModelContext& context = *model.context;
  CompletionPlan plan;
  plan.kind = ApiKind::kCompletion;
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> echo, Bool(body, "echo"));
  plan.echo = echo.value_or(false);
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs,
                         AlternativesCount(body, "logprobs", context.limits));
  if (logprobs) plan.logprobs = static_cast<int32_t>(*logprobs);
  HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> session_id, String(body, "session_id"));
  const bool resumes = session_id && !session_id->empty();
  // As the tokenizer's post-processor does, unless a session goes on (its history has it).
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> add_special, Bool(body, "add_special_tokens"));
  HGRN2_ASSIGN_OR_RETURN(plan.prompts,
                         CompletionPrompts(body, add_special.value_or(!resumes), resumes, context));
  HGRN2_RETURN_IF_ERROR(
      PlanGeneration(body, model, kCompletionDefaultMaxTokens, "max_tokens", plan));
  return plan;
}

absl::StatusOr<CompletionPlan> PlanChatCompletion(absl::string_view body_text,
                                                  const OpenAiModel& model) {
  HGRN2_ASSIGN_OR_RETURN(Json body, ParseBody(body_text));
  HGRN2_RETURN_IF_ERROR(CheckModel(body, model));
  HGRN2_RETURN_IF_ERROR(RefuseUnsupported(body, ApiKind::kChat));
  const ModelContext& context = *model.context;
  CompletionPlan plan;
  plan.kind = ApiKind::kChat;
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> logprobs, Bool(body, "logprobs"));
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> top_logprobs,
                         AlternativesCount(body, "top_logprobs", context.limits));
  if (top_logprobs && !logprobs.value_or(false)) {
    return Invalid("top_logprobs", "needs logprobs: true");
  }
  if (logprobs.value_or(false)) plan.logprobs = static_cast<int32_t>(top_logprobs.value_or(0));
  HGRN2_ASSIGN_OR_RETURN(std::string text, RenderChat(body, model));
  HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> session_id, String(body, "session_id"));
  const bool resumes = session_id && !session_id->empty();
  // The template writes the special tokens itself (as vLLM's default for chat).
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> add_special, Bool(body, "add_special_tokens"));
  HGRN2_ASSIGN_OR_RETURN(
      PlannedPrompt prompt,
      TextPrompt(std::move(text), "messages", add_special.value_or(false), resumes, context));
  plan.prompts.push_back(std::move(prompt));
  // max_completion_tokens is the newer name; max_tokens is still sent by many clients.
  const char* field =
      Field(body, "max_completion_tokens").is_null() ? "max_tokens" : "max_completion_tokens";
  HGRN2_RETURN_IF_ERROR(
      PlanGeneration(body, model, context.limits.default_max_new_tokens, field, plan));
  return plan;
}

absl::StatusOr<TokenizePlan> PlanTokenize(absl::string_view body_text, const OpenAiModel& model) {
  HGRN2_ASSIGN_OR_RETURN(Json body, ParseBody(body_text));
  HGRN2_RETURN_IF_ERROR(CheckModel(body, model));
  const ModelContext& context = *model.context;
  TokenizePlan plan;
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> strs, Bool(body, "return_token_strs"));
  plan.return_token_strs = strs.value_or(false);
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> add_special, Bool(body, "add_special_tokens"));
  std::string text;
  const char* field = "prompt";
  if (!Field(body, "messages").is_null()) {
    HGRN2_ASSIGN_OR_RETURN(text, RenderChat(body, model));
    field = "messages";
    add_special = add_special.value_or(false);
  } else {
    HGRN2_ASSIGN_OR_RETURN(std::optional<std::string> prompt, String(body, "prompt"));
    if (!prompt) return Invalid("prompt", "missing (give prompt or messages)");
    text = *std::move(prompt);
  }
  HGRN2_ASSIGN_OR_RETURN(const Tokenizer* tokenizer, TokenizerFor(field, context));
  HGRN2_RETURN_IF_ERROR(CheckTextBytes(text, field, context.limits));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, add_special.value_or(true));
  if (!ids.ok()) return Invalid(field, ids.status().message());
  plan.ids = *std::move(ids);
  return plan;
}

absl::StatusOr<std::vector<int32_t>> PlanDetokenize(absl::string_view body_text,
                                                    const OpenAiModel& model) {
  HGRN2_ASSIGN_OR_RETURN(Json body, ParseBody(body_text));
  HGRN2_RETURN_IF_ERROR(CheckModel(body, model));
  const ModelContext& context = *model.context;
  HGRN2_RETURN_IF_ERROR(TokenizerFor("tokens", context).status());
  const Json& tokens = Field(body, "tokens");
  if (!tokens.is_array()) return Invalid("tokens", "must be a list of token ids");
  if (static_cast<int64_t>(tokens.size()) > context.limits.max_detokenize_ids) {
    return OverLimit("tokens", static_cast<int64_t>(tokens.size()), "ids",
                     context.limits.max_detokenize_ids, "--max-detokenize-ids");
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!tokens[i].is_number_integer()) {
      return Invalid(absl::StrCat("tokens[", i, "]"), "must be a token id");
    }
    const int64_t id = tokens[i].get<int64_t>();
    ids.push_back(id < 0 || id > std::numeric_limits<int32_t>::max() ? -1
                                                                     : static_cast<int32_t>(id));
  }
  HGRN2_RETURN_IF_ERROR(CheckIds(ids, "tokens", *context.config));
  return ids;
}

}  // namespace hgrn2::server

// Request checks and conversion for the hgrn2.v1 messages (see requests.h).
#include "server/grpc/requests.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {
namespace {

// Values at or below this in logit_bias ban the token (-inf does not survive JSON).
constexpr float kBanBias = -1e30f;

absl::StatusOr<SamplingParams> ToSampling(const v1::GenerateRequest& request,
                                          const ModelContext& model) {
  const v1::SamplingParams& in = request.sampling();
  SamplingParams out;
  out.temperature = in.has_temperature() ? in.temperature() : 1.0f;
  out.top_k = in.top_k();
  out.top_p = in.has_top_p() ? in.top_p() : 1.0f;
  out.min_p = in.min_p();
  out.repetition_penalty = in.has_repetition_penalty() ? in.repetition_penalty() : 1.0f;
  out.presence_penalty = in.presence_penalty();
  out.frequency_penalty = in.frequency_penalty();
  if (in.has_seed()) out.seed = in.seed();
  if (in.logit_bias_size() > model.limits.max_logit_bias) {
    return OverLimit("sampling.logit_bias", in.logit_bias_size(), "entries",
                     model.limits.max_logit_bias, "--max-logit-bias");
  }
  for (const auto& [id, bias] : in.logit_bias()) {
    out.logit_bias.emplace_back(id,
                                bias <= kBanBias ? -std::numeric_limits<float>::infinity() : bias);
  }
  // Map order is unspecified; entries of one id add up, so sort for a fixed order.
  std::sort(out.logit_bias.begin(), out.logit_bias.end());
  if (request.logprobs() > static_cast<uint32_t>(model.limits.max_logprobs)) {
    return AboveMaximum("logprobs", request.logprobs(), model.limits.max_logprobs,
                        "--max-logprobs");
  }
  out.num_top_logprobs = static_cast<int32_t>(request.logprobs());
  if (absl::Status valid = out.Validate(model.config->vocab_size); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", valid.message()));
  }
  return out;
}

absl::StatusOr<StoppingParams> ToStopping(const v1::GenerateRequest& request,
                                          const ModelContext& model) {
  StoppingParams out;
  const RequestLimits& limits = model.limits;
  if (request.max_new_tokens() > static_cast<uint32_t>(limits.max_new_tokens)) {
    return AboveMaximum("max_new_tokens", request.max_new_tokens(), limits.max_new_tokens,
                        "--max-new-tokens");
  }
  out.max_new_tokens = request.max_new_tokens() == 0
                           ? limits.default_max_new_tokens
                           : static_cast<int32_t>(request.max_new_tokens());
  if (request.stop_token_ids_size() > limits.max_stop_token_ids) {
    return OverLimit("stop_token_ids", request.stop_token_ids_size(), "ids",
                     limits.max_stop_token_ids, "--max-stop-token-ids");
  }
  out.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  out.ignore_eos = request.ignore_eos();
  HGRN2_RETURN_IF_ERROR(out.Validate(model.config->vocab_size));
  return out;
}

}  // namespace

absl::StatusOr<PreparedGeneration> PrepareGenerate(const v1::GenerateRequest& request,
                                                   const ModelContext& model) {
  PreparedGeneration out;
  if (!request.session_id().empty()) {
    HGRN2_RETURN_IF_ERROR(CheckSessionId(request.session_id(), "session_id"));
    out.session_id = request.session_id();
  }
  if (!request.save_session_as().empty()) {
    HGRN2_RETURN_IF_ERROR(CheckSessionId(request.save_session_as(), "save_session_as"));
    out.save_session_as = request.save_session_as();
  }
  if (request.has_save_if_revision() || request.save_overwrite()) {
    const absl::string_view field =
        request.has_save_if_revision() ? "save_if_revision" : "save_overwrite";
    if (out.save_session_as.empty()) return Invalid(field, "needs save_session_as");
    if (request.has_save_if_revision() && request.save_overwrite()) {
      return Invalid("save_if_revision", "cannot be set together with save_overwrite");
    }
    if (request.has_save_if_revision()) out.save_options.if_revision = request.save_if_revision();
    out.save_options.overwrite = request.save_overwrite();
  }
  const bool resumes = !out.session_id.empty();
  if (request.n() > static_cast<uint32_t>(model.limits.max_samples)) {
    return AboveMaximum("n", request.n(), model.limits.max_samples, "--max-n");
  }
  out.num_samples = request.n() == 0 ? 1 : static_cast<int32_t>(request.n());
  if (out.num_samples > 1 && !out.save_session_as.empty()) {
    return Invalid("save_session_as", "cannot save a session from n > 1 samples");
  }
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      HGRN2_ASSIGN_OR_RETURN(const Tokenizer* tokenizer, TokenizerFor("text", model));
      HGRN2_RETURN_IF_ERROR(CheckTextBytes(request.text(), "text", model.limits));
      // The tokenizer's own post-processor: what the model saw around texts in training. A
      // session's history goes on, so it gets none unless asked.
      const bool add_special =
          request.has_add_special_tokens() ? request.add_special_tokens() : !resumes;
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(request.text(), add_special);
      if (!ids.ok()) return Invalid("text", ids.status().message());
      if (ids->empty() && !resumes) return Invalid("text", "encodes to no tokens");
      out.engine.prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty() && !resumes) {
        return Invalid("token_ids", "empty prompt");
      }
      HGRN2_RETURN_IF_ERROR(CheckLength(request.token_ids().ids_size(), "token_ids", model));
      HGRN2_RETURN_IF_ERROR(CheckIds(request.token_ids().ids(), "token_ids", *model.config));
      out.engine.prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    default:
      // A session goes on generating from where it stopped.
      if (!resumes) return Invalid("prompt", "missing: give text or token_ids");
  }
  HGRN2_RETURN_IF_ERROR(
      CheckLength(static_cast<int64_t>(out.engine.prompt.size()), "prompt", model));
  HGRN2_ASSIGN_OR_RETURN(out.engine.sampling, ToSampling(request, model));
  HGRN2_ASSIGN_OR_RETURN(out.engine.stopping, ToStopping(request, model));
  out.stop_strings.assign(request.stop().begin(), request.stop().end());
  HGRN2_RETURN_IF_ERROR(CheckStopStrings(out.stop_strings, "stop", model));
  out.engine.priority = request.priority();
  out.prompt_tokens = static_cast<int32_t>(out.engine.prompt.size());
  return out;
}

absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const ModelContext& model) {
  const bool resumes = !request.session_id().empty();
  if (resumes) HGRN2_RETURN_IF_ERROR(CheckSessionId(request.session_id(), "session_id"));
  if (request.top_logprobs() > static_cast<uint32_t>(model.limits.max_logprobs)) {
    return AboveMaximum("top_logprobs", request.top_logprobs(), model.limits.max_logprobs,
                        "--max-logprobs");
  }
  // Every id list and text is bounded before any is encoded or copied.
  if (request.context_case() == v1::ScoreRequest::kContextText) {
    HGRN2_RETURN_IF_ERROR(CheckTextBytes(request.context_text(), "context_text", model.limits));
  } else if (request.context_case() == v1::ScoreRequest::kContextIds) {
    HGRN2_RETURN_IF_ERROR(CheckLength(request.context_ids().ids_size(), "context_ids", model));
  }
  if (request.continuation_case() == v1::ScoreRequest::kContinuationText) {
    HGRN2_RETURN_IF_ERROR(
        CheckTextBytes(request.continuation_text(), "continuation_text", model.limits));
  } else if (request.continuation_case() == v1::ScoreRequest::kContinuationIds) {
    HGRN2_RETURN_IF_ERROR(
        CheckLength(request.continuation_ids().ids_size(), "continuation_ids", model));
  }
  const bool add_bos = request.has_add_special_tokens() ? request.add_special_tokens() : !resumes;
  std::vector<int32_t> context, continuation;
  switch (request.continuation_case()) {
    case v1::ScoreRequest::kContinuationText:
      if (request.context_case() == v1::ScoreRequest::kContextText) {
        // As evaluation harnesses do: encode the whole text, and the continuation is what
        // follows the context's own tokens (a word split across the boundary stays whole).
        HGRN2_ASSIGN_OR_RETURN(context,
                               EncodeText(request.context_text(), add_bos, "context_text", model));
        HGRN2_ASSIGN_OR_RETURN(std::vector<int32_t> whole,
                               EncodeText(request.context_text() + request.continuation_text(),
                                          add_bos, "continuation_text", model));
        if (whole.size() <= context.size()) {
          return Invalid("continuation_text", "encodes to no tokens after the context");
        }
        continuation.assign(whole.begin() + static_cast<ptrdiff_t>(context.size()), whole.end());
      } else {
        // BOS goes before the first text: the context's, else the continuation's (where it then
        // serves as context).
        const bool bos_first =
            add_bos && request.context_case() == v1::ScoreRequest::CONTEXT_NOT_SET;
        HGRN2_ASSIGN_OR_RETURN(continuation, EncodeText(request.continuation_text(), false,
                                                        "continuation_text", model));
        if (continuation.empty()) return Invalid("continuation_text", "encodes to no tokens");
        if (bos_first && model.tokenizer->bos_id().has_value()) {
          context.push_back(*model.tokenizer->bos_id());
        }
      }
      break;
    case v1::ScoreRequest::kContinuationIds:
      if (request.continuation_ids().ids().empty()) {
        return Invalid("continuation_ids", "empty: nothing to score");
      }
      HGRN2_RETURN_IF_ERROR(
          CheckIds(request.continuation_ids().ids(), "continuation_ids", *model.config));
      continuation.assign(request.continuation_ids().ids().begin(),
                          request.continuation_ids().ids().end());
      break;
    default:
      return Invalid("continuation", "missing: give continuation_text or continuation_ids");
  }
  if (request.context_case() == v1::ScoreRequest::kContextIds) {
    if (request.context_ids().ids().empty()) {
      return Invalid("context_ids", "empty (leave the context out instead)");
    }
    HGRN2_RETURN_IF_ERROR(CheckIds(request.context_ids().ids(), "context_ids", *model.config));
    context.assign(request.context_ids().ids().begin(), request.context_ids().ids().end());
  } else if (request.context_case() == v1::ScoreRequest::kContextText &&
             request.continuation_case() == v1::ScoreRequest::kContinuationIds) {
    HGRN2_ASSIGN_OR_RETURN(context,
                           EncodeText(request.context_text(), add_bos, "context_text", model));
    if (context.empty()) return Invalid("context_text", "encodes to no tokens");
  }

  PreparedScore out;
  out.context_tokens = static_cast<int32_t>(context.size());
  if (resumes) {
    // The session's pending token is the context of the first one.
    out.session_id = request.session_id();
  } else if (context.empty()) {
    if (continuation.size() < 2) {
      return Invalid("continuation",
                     "one token and no context: nothing to score (the first "
                     "token has nothing to condition on)");
    }
    out.unscored_tokens = 1;
  }
  out.scored_ids.assign(continuation.begin() + out.unscored_tokens, continuation.end());
  out.engine.tokens = std::move(context);
  out.engine.tokens.insert(out.engine.tokens.end(), continuation.begin(), continuation.end());
  HGRN2_RETURN_IF_ERROR(
      CheckLength(static_cast<int64_t>(out.engine.tokens.size()), "context + continuation", model));
  out.engine.num_top_logprobs = static_cast<int32_t>(request.top_logprobs());
  out.engine.priority = request.priority();
  return out;
}

absl::StatusOr<std::vector<int32_t>> PrepareTokenize(const v1::TokenizeRequest& request,
                                                     const ModelContext& model) {
  HGRN2_ASSIGN_OR_RETURN(const Tokenizer* tokenizer, TokenizerFor("text", model));
  HGRN2_RETURN_IF_ERROR(CheckTextBytes(request.text(), "text", model.limits));
  const bool add_special = !request.has_add_special_tokens() || request.add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(request.text(), add_special);
  if (!ids.ok()) return Invalid("text", ids.status().message());
  return ids;
}

absl::StatusOr<std::vector<int32_t>> PrepareDetokenize(const v1::DetokenizeRequest& request,
                                                       const ModelContext& model) {
  if (model.tokenizer == nullptr) {
    return Invalid("token_ids",
                   "this model has no tokenizer (no tokenizer.json or tokenizer.model)");
  }
  if (request.token_ids_size() > model.limits.max_detokenize_ids) {
    return OverLimit("token_ids", request.token_ids_size(), "ids", model.limits.max_detokenize_ids,
                     "--max-detokenize-ids");
  }
  return std::vector<int32_t>(request.token_ids().begin(), request.token_ids().end());
}

}  // namespace hgrn2::server

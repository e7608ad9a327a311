// The hgrn2.v1.Inference handlers: Generate and Score start their calls (generate_call.h,
// score_call.h); Tokenize, Detokenize and GetModelInfo answer at once.
#include "server/grpc/inference_service.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/call_scope.h"
#include "server/grpc/call_info.h"
#include "server/grpc/generate_call.h"
#include "server/grpc/grpc_status.h"
#include "server/grpc/requests.h"
#include "server/grpc/score_call.h"

namespace hgrn2::server {
namespace {

// Runs `answer` in a call scope and finishes the unary call with its status.
template <typename Answer>
grpc::ServerUnaryReactor* AnswerAtOnce(const CallParts& parts, grpc::CallbackServerContext* context,
                                       const char* method, Answer answer) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::unique_ptr<CallScope>> scope =
      CallScope::Begin(parts, CallInfoOf(*context, method));
  if (!scope.ok()) {
    reactor->Finish(ToGrpcStatus(scope.status()));
    return reactor;
  }
  const absl::Status status = answer();
  (*scope)->End(status);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

InferenceService::InferenceService(const EngineOptions& engine_options, ServedModel served,
                                   const CallParts& parts)
    : engine_options_(engine_options), served_(std::move(served)), parts_(parts) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return StartGenerateCall(parts_, context, *request);
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  return StartScoreCall(parts_, context, *request, response);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  return AnswerAtOnce(parts_, context, "Tokenize", [&]() -> absl::Status {
    absl::StatusOr<std::vector<int32_t>> ids = PrepareTokenize(*request, *parts_.model);
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) {
      response->add_token_ids(id);
      response->add_pieces(parts_.model->tokenizer->PieceOf(id));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  return AnswerAtOnce(parts_, context, "Detokenize", [&]() -> absl::Status {
    absl::StatusOr<std::vector<int32_t>> ids = PrepareDetokenize(*request, *parts_.model);
    if (!ids.ok()) return ids.status();
    const bool skip_special = !request->has_skip_special_tokens() || request->skip_special_tokens();
    absl::StatusOr<std::string> text = parts_.model->tokenizer->Decode(*ids, skip_special);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message()));
    }
    response->set_text(*std::move(text));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  return AnswerAtOnce(parts_, context, "GetModelInfo", [&]() -> absl::Status {
    const ModelContext& model = *parts_.model;
    const ModelConfig& c = *model.config;
    response->set_model_type("hgrn2");
    response->set_model_path(served_.path);
    response->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
    response->set_hidden_size(static_cast<uint32_t>(c.hidden_size));
    response->set_num_layers(static_cast<uint32_t>(c.num_layers));
    response->set_num_heads(static_cast<uint32_t>(c.num_heads));
    response->set_head_key_dim(static_cast<uint32_t>(c.key_dim));
    response->set_head_value_dim(static_cast<uint32_t>(c.value_dim));
    response->set_num_parameters(static_cast<uint64_t>(c.num_parameters()));
    if (model.tokenizer != nullptr && model.tokenizer->bos_id()) {
      response->set_bos_token_id(*model.tokenizer->bos_id());
    } else if (c.bos_token_id) {
      response->set_bos_token_id(*c.bos_token_id);
    }
    for (int32_t id : c.eos_token_ids) response->add_eos_token_ids(id);
    if (model.tokenizer != nullptr) response->set_tokenizer(model.tokenizer->kind());
    response->set_state_bytes_per_sequence(parts_.engine->state_bytes());
    response->set_dtype(served_.dtype);
    response->set_state_dtype(served_.state_dtype);
    response->set_backend(served_.backend);
    v1::Limits& limits = *response->mutable_limits();
    const RequestLimits& l = model.limits;
    limits.set_max_prompt_tokens(static_cast<uint32_t>(l.max_prompt_tokens));
    limits.set_max_new_tokens(static_cast<uint32_t>(l.max_new_tokens));
    limits.set_default_max_new_tokens(static_cast<uint32_t>(l.default_max_new_tokens));
    limits.set_max_stop_strings(static_cast<uint32_t>(l.max_stop_strings));
    limits.set_max_stop_string_bytes(static_cast<uint32_t>(l.max_stop_string_bytes));
    limits.set_max_logprobs(static_cast<uint32_t>(l.max_logprobs));
    limits.set_max_running(static_cast<uint32_t>(engine_options_.max_running));
    limits.set_max_queued(static_cast<uint32_t>(engine_options_.max_queued));
    limits.set_max_n(static_cast<uint32_t>(l.max_samples));
    limits.set_max_stop_total_bytes(static_cast<uint32_t>(l.max_stop_total_bytes));
    limits.set_max_stop_token_ids(static_cast<uint32_t>(l.max_stop_token_ids));
    limits.set_max_logit_bias(static_cast<uint32_t>(l.max_logit_bias));
    limits.set_max_request_id_bytes(static_cast<uint32_t>(l.max_request_id_bytes));
    limits.set_max_text_bytes(static_cast<uint64_t>(l.max_text_bytes));
    limits.set_max_detokenize_ids(static_cast<uint32_t>(l.max_detokenize_ids));
    limits.set_max_message_bytes(static_cast<uint64_t>(served_.max_message_bytes));
    limits.set_max_streams_per_connection(
        static_cast<uint32_t>(served_.max_streams_per_connection));
    response->set_model_fingerprint(served_.fingerprint);
    response->set_server_version(HGRN2_VERSION);
    return absl::OkStatus();
  });
}

}  // namespace hgrn2::server

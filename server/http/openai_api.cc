// OpenAiApi: routing, and the routes that answer at once (see openai_api.h).
#include "server/http/openai_api.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/core/call_scope.h"
#include "server/http/completion_call.h"
#include "server/http/openai_errors.h"
#include "server/http/openai_responses.h"

namespace hgrn2::server {
namespace {

// The call's name in the metrics and the access log is its route ("GET /v1/models/{id}"), never
// the path as sent: a label must not take a value per client-chosen string.
CallInfo CallInfoOf(const HttpRequest& request) {
  CallInfo info;
  info.method = absl::StartsWith(request.path, "/v1/models/")
                    ? absl::StrCat(request.method, " /v1/models/{id}")
                    : absl::StrCat(request.method, " ", request.path);
  info.peer = request.peer;
  info.authorization = request.authorization;
  info.request_id = request.request_id;
  info.traceparent = request.traceparent;
  return info;
}

HttpResponse JsonResponse(const Json& body) {
  HttpResponse response;
  response.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return response;
}

// A route that answers at once, in a call scope: `answer` gives the body or why there is none.
template <typename Answer>
void AnswerAtOnce(const CallParts& parts, HttpExchange& exchange, Answer answer) {
  absl::StatusOr<std::unique_ptr<CallScope>> scope =
      CallScope::Begin(parts, CallInfoOf(exchange.request()));
  if (!scope.ok()) return exchange.Respond(ErrorResponse(scope.status()));
  absl::StatusOr<Json> body = answer();
  (*scope)->End(body.status());
  HttpResponse response = body.ok() ? JsonResponse(*body) : ErrorResponse(body.status());
  response.headers.emplace_back("X-Request-Id", (*scope)->request_id());
  exchange.Respond(std::move(response));
}

struct Route {
  const char* path;
  const char* method;
};
constexpr Route kRoutes[] = {
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
    {"/v1/models", "GET"},       {"/tokenize", "POST"},
    {"/detokenize", "POST"},     {"/tokenizer_info", "GET"},
    {"/health", "GET"},          {"/version", "GET"},
};

}  // namespace

OpenAiApi::OpenAiApi(const CallParts& parts, std::string model_name, std::string fingerprint,
                     std::unique_ptr<ChatTemplate> chat)
    : parts_(parts), chat_(std::move(chat)) {
  model_.name = std::move(model_name);
  model_.context = parts_.model;
  model_.chat = chat_.get();
  model_.fingerprint = std::move(fingerprint);
  model_.created = absl::ToUnixSeconds(absl::Now());
}

void OpenAiApi::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& request = exchange->request();
  const std::string& path = request.path;
  const std::string& method = request.method;
  if (path == "/health" && method == "GET") {
    // No key and no call scope: load balancers probe it, as gRPC's health service.
    if (serving_.load()) return exchange->Respond(JsonResponse(Json::object()));
    return exchange->Respond(ErrorResponse(
        absl::UnavailableError("not serving: the health probe failed, or the server is draining")));
  }
  if (path == "/version" && method == "GET") {
    return exchange->Respond(JsonResponse(Json{{"version", HGRN2_VERSION}}));
  }
  if (path == "/v1/completions" && method == "POST") {
    return Completions(std::move(exchange), ApiKind::kCompletion);
  }
  if (path == "/v1/chat/completions" && method == "POST") {
    return Completions(std::move(exchange), ApiKind::kChat);
  }
  if (path == "/v1/models" && method == "GET") return Models(*exchange, "");
  if (absl::StartsWith(path, "/v1/models/") && method == "GET") {
    return Models(*exchange, path.substr(std::string("/v1/models/").size()));
  }
  if (path == "/tokenize" && method == "POST") return Tokenize(*exchange);
  if (path == "/detokenize" && method == "POST") return Detokenize(*exchange);
  if (path == "/tokenizer_info" && method == "GET") return TokenizerInfo(*exchange);
  for (const Route& route : kRoutes) {
    if (path == route.path) {
      HttpResponse response = ErrorResponse(absl::InvalidArgumentError(
          absl::StrCat("method: ", path, " takes ", route.method, ", not ", method)));
      response.status = 405;
      response.headers.emplace_back("Allow", route.method);
      return exchange->Respond(std::move(response));
    }
  }
  exchange->Respond(
      ErrorResponse(absl::NotFoundError(absl::StrCat("no route ", method, " ", path))));
}

void OpenAiApi::Completions(std::shared_ptr<HttpExchange> exchange, ApiKind kind) {
  absl::StatusOr<std::unique_ptr<CallScope>> begun =
      CallScope::Begin(parts_, CallInfoOf(exchange->request()));
  if (!begun.ok()) return exchange->Respond(ErrorResponse(begun.status()));
  std::shared_ptr<CallScope> scope = *std::move(begun);
  absl::StatusOr<CompletionPlan> plan = kind == ApiKind::kChat
                                            ? PlanChatCompletion(exchange->request().body, model_)
                                            : PlanCompletion(exchange->request().body, model_);
  if (!plan.ok()) {
    // The scope ends first: the tenant's slot is free before the client hears of the refusal.
    scope->End(plan.status());
    HttpResponse response = ErrorResponse(plan.status());
    response.headers.emplace_back("X-Request-Id", scope->request_id());
    return exchange->Respond(std::move(response));
  }
  StartCompletionCall(parts_, model_, std::move(scope), std::move(exchange), *std::move(plan));
}

void OpenAiApi::Models(HttpExchange& exchange, const std::string& id) {
  AnswerAtOnce(parts_, exchange, [&]() -> absl::StatusOr<Json> {
    const Json card = {{"id", model_.name},
                       {"object", "model"},
                       {"created", model_.created},
                       {"owned_by", "hgrn2-serve"},
                       {"root", model_.name},
                       {"parent", nullptr},
                       {"max_model_len", model_.context->limits.max_prompt_tokens},
                       {"vocab_size", model_.context->config->vocab_size}};
    if (id.empty()) return Json{{"object", "list"}, {"data", Json::array({card})}};
    if (id != model_.name) {
      return absl::NotFoundError(absl::StrCat(
          "model: \"", id, "\" is not served here (this server serves \"", model_.name, "\")"));
    }
    return card;
  });
}

void OpenAiApi::Tokenize(HttpExchange& exchange) {
  AnswerAtOnce(parts_, exchange, [&]() -> absl::StatusOr<Json> {
    absl::StatusOr<TokenizePlan> plan = PlanTokenize(exchange.request().body, model_);
    if (!plan.ok()) return plan.status();
    Json strs = nullptr;
    if (plan->return_token_strs) {
      strs = Json::array();
      for (int32_t id : plan->ids) strs.push_back(model_.context->tokenizer->PieceOf(id));
    }
    return Json{{"count", plan->ids.size()},
                {"max_model_len", model_.context->limits.max_prompt_tokens},
                {"tokens", plan->ids},
                {"token_strs", std::move(strs)}};
  });
}

void OpenAiApi::Detokenize(HttpExchange& exchange) {
  AnswerAtOnce(parts_, exchange, [&]() -> absl::StatusOr<Json> {
    absl::StatusOr<std::vector<int32_t>> ids = PlanDetokenize(exchange.request().body, model_);
    if (!ids.ok()) return ids.status();
    absl::StatusOr<std::string> text =
        model_.context->tokenizer->Decode(*ids, /*skip_special=*/false);
    if (!text.ok())
      return absl::InvalidArgumentError(absl::StrCat("tokens: ", text.status().message()));
    return Json{{"prompt", *std::move(text)}};
  });
}

void OpenAiApi::TokenizerInfo(HttpExchange& exchange) {
  AnswerAtOnce(parts_, exchange, [&]() -> absl::StatusOr<Json> {
    if (chat_ == nullptr) {
      return absl::FailedPreconditionError("this model has no tokenizer: it takes token ids only");
    }
    const Tokenizer& tokenizer = *model_.context->tokenizer;
    return Json{
        {"tokenizer_class", tokenizer.kind()},
        {"bos_token", chat_->bos_token().empty() ? Json(nullptr) : Json(chat_->bos_token())},
        {"eos_token", chat_->eos_token().empty() ? Json(nullptr) : Json(chat_->eos_token())},
        {"pad_token", nullptr},
        {"add_bos_token", tokenizer.bos_id().has_value()},
        {"model_max_length", model_.context->limits.max_prompt_tokens},
        {"vocab_size", tokenizer.vocab_size()},
        {"chat_template", chat_->source()},
        {"chat_template_origin", chat_->origin()}};
  });
}

}  // namespace hgrn2::server

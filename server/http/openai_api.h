// OpenAiApi: the OpenAI-compatible HTTP API's routes, a second front end on the request core
// (server/core/): every call begins in a CallScope (API key, tenant, admission, request id,
// metrics, access log), as the gRPC calls do.
//
//   POST /v1/completions, POST /v1/chat/completions   completion_call.h
//   GET  /v1/models, GET /v1/models/{id}
//   POST /tokenize, POST /detokenize, GET /tokenizer_info   (vLLM's shapes)
//   GET  /health (no key: for load balancers), GET /version
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "server/core/call_parts.h"
#include "server/http/chat_template.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_requests.h"

namespace hgrn2::server {

// Thread-safety: Handle from any thread (the HTTP I/O threads); SetServing from any thread.
class OpenAiApi {
 public:
  // `parts` outlive the API. `chat` is null for a model without a tokenizer.
  OpenAiApi(const CallParts& parts, std::string model_name, std::string fingerprint,
            std::unique_ptr<ChatTemplate> chat);

  void Handle(std::shared_ptr<HttpExchange> exchange);
  // What GET /health answers: 200 while serving, 503 otherwise (the Server's deep health: its
  // probe of the device, and draining).
  void SetServing(bool serving) { serving_.store(serving); }

  const OpenAiModel& model() const { return model_; }

 private:
  void Models(HttpExchange& exchange, const std::string& id);
  void Completions(std::shared_ptr<HttpExchange> exchange, ApiKind kind);
  void Tokenize(HttpExchange& exchange);
  void Detokenize(HttpExchange& exchange);
  void TokenizerInfo(HttpExchange& exchange);

  const CallParts parts_;
  std::unique_ptr<ChatTemplate> chat_;
  OpenAiModel model_;
  std::atomic<bool> serving_{false};
};

}  // namespace hgrn2::server

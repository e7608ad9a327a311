// CompletionCall: the answer to one /v1/completions or /v1/chat/completions request on the
// request core (server/core/generation.h, scoring.h): its prompts' generations and, for echo with
// logprobs, their scorings; the events of a stream (one write in flight) or the whole answer.
#pragma once

#include <memory>

#include "server/core/call_parts.h"
#include "server/core/call_scope.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_requests.h"

namespace hgrn2::server {

// Starts answering `plan` on `exchange` in `scope` (admitted). `model` outlives the call.
void StartCompletionCall(const CallParts& parts, const OpenAiModel& model,
                         std::shared_ptr<CallScope> scope, std::shared_ptr<HttpExchange> exchange,
                         CompletionPlan plan);

}  // namespace hgrn2::server

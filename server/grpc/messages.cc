// Reply message pieces shared by the Generate and Score calls.
#include "server/grpc/messages.h"

#include <string>

#include "absl/status/statusor.h"

namespace hgrn2::server {
namespace {

std::string TokenText(const Tokenizer* tokenizer, int32_t id) {
  if (tokenizer == nullptr) return {};
  absl::StatusOr<std::string> text = tokenizer->Decode({id}, /*skip_special=*/false);
  return text.ok() ? *std::move(text) : std::string();
}

}  // namespace

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::LENGTH;
    case FinishReason::kEos:
      return v1::EOS;
    case FinishReason::kStop:
      return v1::STOP;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AddLogprob(int32_t id, float logprob, const std::vector<TokenLogprob>& top,
                const Tokenizer* tokenizer, v1::TokenLogprob& out) {
  out.set_token_id(id);
  out.set_logprob(logprob);
  for (const TokenLogprob& alternative : top) {
    v1::TopLogprob& entry = *out.add_top();
    entry.set_token_id(alternative.id);
    entry.set_logprob(alternative.logprob);
    entry.set_text(TokenText(tokenizer, alternative.id));
  }
}

}  // namespace hgrn2::server

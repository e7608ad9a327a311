// OpenAiClient: hgrn2-loadgen's driver for the OpenAI-compatible HTTP API (--protocol openai):
// streaming POST /v1/completions calls on asynchronous keep-alive connections (Boost.Beast on a
// few Asio threads: no thread per stream, as the gRPC driver's callback API), with the server-sent
// events parsed into the same per-call records.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "clients/loadgen/call_record.h"
#include "nlohmann/json.hpp"

namespace hgrn2::loadgen {

class OpenAiClient {
 public:
  // `addr` is HOST:PORT; `api_key` goes out as "Authorization: Bearer KEY" when set.
  static absl::StatusOr<std::unique_ptr<OpenAiClient>> Create(const std::string& addr,
                                                              const std::string& api_key,
                                                              int threads);
  ~OpenAiClient();
  OpenAiClient(const OpenAiClient&) = delete;
  OpenAiClient& operator=(const OpenAiClient&) = delete;

  // One blocking request (the setup: /v1/models, /tokenize, /detokenize): the JSON answer, or
  // UNAVAILABLE naming the status and the server's message.
  absl::StatusOr<nlohmann::json> Call(const std::string& method, const std::string& path,
                                      const std::string& body);

  // Streams one POST /v1/completions with `body` (which asks for stream, include_usage and
  // continuous_usage_stats); `done` gets `record` filled in, on an I/O thread. Token counts come
  // from each event's usage; the error is HTTP_<status> or CONNECTION.
  void Stream(std::string body, CallRecord record, std::function<void(CallRecord)> done);

  struct Impl;  // the I/O threads and the idle connections (openai_load.cc)

 private:
  explicit OpenAiClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hgrn2::loadgen

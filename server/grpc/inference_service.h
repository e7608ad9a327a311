// InferenceService: the hgrn2.v1.Inference gRPC service (callback API). Thin handlers: each call
// begins in a CallScope, maps its message to the request core's types and its answer back.
#pragma once

#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "server/core/call_parts.h"

namespace hgrn2::server {

// What GetModelInfo reports beyond the config.
struct ServedModel {
  std::string path;
  std::string backend;  // "cpu" or "cuda"
  std::string dtype;
  std::string state_dtype;
  std::string fingerprint;  // hex
  // Transport limits, reported by GetModelInfo beside the request limits.
  int64_t max_message_bytes = 0;
  int32_t max_streams_per_connection = 0;
};

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // Everything passed in must outlive the service.
  InferenceService(const EngineOptions& engine_options, ServedModel served, const CallParts& parts);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  const EngineOptions engine_options_;
  const ServedModel served_;
  const CallParts parts_;
};

}  // namespace hgrn2::server

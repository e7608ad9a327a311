// What the in-process server tests share: test options, a gRPC client of the Inference,
// Sessions and Health services over loopback, and reading the metrics endpoint.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"
#include "gtest/gtest.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "hgrn2/v1/sessions.grpc.pb.h"
#include "server/options.h"

namespace hgrn2::server {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

inline ServerOptions TestOptions(const std::filesystem::path& model) {
  ServerOptions options;
  options.model_dir = model.string();
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = 0;
  options.http_port = 0;
  options.device = "cpu";
  options.engine.max_running = 16;
  options.engine.max_queued = 256;
  options.limits.max_new_tokens = 100000;
  options.health_check_interval = absl::ZeroDuration();
  return options;
}

// Sends "authorization: Bearer <key>" with every call of a channel.
class ApiKeyInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(std::string key) : key_(std::move(key)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", "Bearer " + key_});
    }
    methods->Proceed();
  }

 private:
  const std::string key_;
};

class ApiKeyInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(std::string key) : key_(std::move(key)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new ApiKeyInterceptor(key_);
  }

 private:
  const std::string key_;
};

// A channel to 127.0.0.1:`port` with its own connections (none shared with other channels, so a
// new channel makes a new TLS handshake), sending `api_key` with every call when it is set.
inline std::shared_ptr<grpc::Channel> TestChannel(
    int port, std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
    const std::string& api_key = "") {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!api_key.empty()) {
    interceptors.push_back(std::make_unique<ApiKeyInterceptorFactory>(api_key));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      absl::StrCat("127.0.0.1:", port),
      credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(), args,
      std::move(interceptors));
}

class Client {
 public:
  explicit Client(int port)
      : Client(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials())) {}
  explicit Client(std::shared_ptr<grpc::Channel> channel)
      : channel_(std::move(channel)),
        stub_(v1::Inference::NewStub(channel_)),
        sessions_(v1::Sessions::NewStub(channel_)),
        health_(grpc::health::v1::Health::NewStub(channel_)) {}

  struct Stream {
    grpc::Status status;
    std::vector<v1::GenerateResponse> messages;
    std::vector<int32_t> ids;
    std::string text;
  };

  Stream Generate(const v1::GenerateRequest& request, absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = stub_->Generate(&context, request);
    Stream out;
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      out.ids.insert(out.ids.end(), message.token_ids().begin(), message.token_ids().end());
      out.text += message.text();
      out.messages.push_back(message);
    }
    out.status = reader->Finish();
    return out;
  }

  grpc::Status Score(const v1::ScoreRequest& request, v1::ScoreResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    return stub_->Score(&context, request, response);
  }

  HealthCheckResponse::ServingStatus Health(const std::string& service) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    const grpc::Status status = health_->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  v1::Inference::Stub& stub() { return *stub_; }
  v1::Sessions::Stub& sessions() { return *sessions_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::unique_ptr<v1::Sessions::Stub> sessions_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

inline v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, uint32_t max_new_tokens) {
  v1::GenerateRequest request;
  for (int32_t id : ids) request.mutable_token_ids()->add_ids(id);
  request.set_max_new_tokens(max_new_tokens);
  return request;
}

// GET /metrics over a plain socket; the body.
inline std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return {};
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? response : response.substr(body + 4);
}

// The value of one sample line `name` (with its labels, exactly) in a scrape; -1 when absent.
inline double MetricValue(const std::string& scrape, const std::string& sample) {
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (absl::StartsWith(line, sample + " ")) {
      return std::stod(std::string(line.substr(sample.size() + 1)));
    }
  }
  return -1.0;
}

}  // namespace hgrn2::server

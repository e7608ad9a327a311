// The limits gRPC enforces for the server, over real loopback connections: request message
// size, calls open at once on one connection, and the size of a session import.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "hgrn2/v1/sessions.grpc.pb.h"
#include "server/server.h"
#include "tests/server/test_client.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Server> Start(const ServerOptions& options) {
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// A channel with a connection of its own (channels to one address share one by default).
std::shared_ptr<grpc::Channel> OwnConnection(int port) {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), arguments);
}

grpc::Status ModelInfo(v1::Inference::Stub& stub, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::GetModelInfoRequest request;
  v1::ModelInfo info;
  return stub.GetModelInfo(&context, request, &info);
}

// An ImportSession call held open (no chunk sent) until Close.
class OpenImport {
 public:
  explicit OpenImport(v1::Sessions::Stub& stub) : writer_(stub.ImportSession(&context_, &info_)) {}
  grpc::Status Close() {
    writer_->WritesDone();
    return writer_->Finish();
  }

 private:
  grpc::ClientContext context_;
  v1::SessionInfo info_;
  std::unique_ptr<grpc::ClientWriter<v1::SessionChunk>> writer_;
};

// With --max-streams-per-connection 2, a connection holding two calls open gets no third: gRPC
// 1.51's client honours the server's SETTINGS_MAX_CONCURRENT_STREAMS by queueing the call in its
// transport, so it waits (here until its deadline) instead of being refused; it goes through as
// soon as one of the two ends. Another connection is not held up meanwhile.
TEST(LimitsTest, StreamsPerConnection) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.max_streams_per_connection = 2;
  std::unique_ptr<Server> server = Start(options);
  ASSERT_NE(server, nullptr);
  std::shared_ptr<grpc::Channel> channel = OwnConnection(server->port());
  auto inference = v1::Inference::NewStub(channel);
  auto sessions = v1::Sessions::NewStub(channel);
  // One finished call first: the server's SETTINGS have arrived before any stream is held.
  ASSERT_TRUE(ModelInfo(*inference, absl::Seconds(30)).ok());

  auto first = std::make_unique<OpenImport>(*sessions);
  OpenImport second(*sessions);
  const grpc::Status third = ModelInfo(*inference, absl::Seconds(1));
  EXPECT_EQ(third.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << third.error_message();

  auto other_connection = v1::Inference::NewStub(OwnConnection(server->port()));
  EXPECT_TRUE(ModelInfo(*other_connection, absl::Seconds(30)).ok());

  // A call waiting for a stream goes through once one ends.
  std::future<grpc::Status> waiting =
      std::async(std::launch::async, [&] { return ModelInfo(*inference, absl::Seconds(30)); });
  const grpc::Status closed = first->Close();
  EXPECT_EQ(closed.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << closed.error_message();
  first.reset();
  const grpc::Status after = waiting.get();
  EXPECT_TRUE(after.ok()) << after.error_message();
  EXPECT_EQ(second.Close().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// --max-message-bytes: a request of exactly the limit reaches the handler; one byte more is
// RESOURCE_EXHAUSTED from gRPC, naming both sizes.
TEST(LimitsTest, MessageBytes) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.max_receive_message_bytes = 1000;
  std::unique_ptr<Server> server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::TokenizeRequest request;
  request.set_text(std::string(997, 'a'));  // tag, 2-byte length, text
  ASSERT_EQ(request.ByteSizeLong(), 1000u);
  v1::TokenizeResponse response;
  {
    grpc::ClientContext context;
    const grpc::Status at_limit = client.stub().Tokenize(&context, request, &response);
    // tiny-a has no tokenizer: the handler's own answer shows the message got through.
    EXPECT_EQ(at_limit.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(at_limit.error_message(), HasSubstr("no tokenizer"));
  }
  request.set_text(std::string(998, 'a'));
  grpc::ClientContext context;
  const grpc::Status over = client.stub().Tokenize(&context, request, &response);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << over.error_message();
  EXPECT_THAT(over.error_message(), HasSubstr("1001 vs. 1000"));
}

// An ImportSession of more bytes than the largest snapshot of the model is refused, naming the
// limit; a snapshot of exactly the largest size (every snapshot of a model has it) is taken.
TEST(LimitsTest, SessionImportBytes) {
  std::unique_ptr<Server> server = Start(TestOptions(testing::TestDataDir() / "tiny-a"));
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest save = IdsRequest({1, 2, 3}, 2);
  save.set_save_session_as("saved");
  ASSERT_TRUE(client.Generate(save).status.ok());
  std::string snapshot;
  {
    grpc::ClientContext context;
    v1::ExportSessionRequest request;
    request.set_session_id("saved");
    auto reader = client.sessions().ExportSession(&context, request);
    v1::SessionChunk chunk;
    while (reader->Read(&chunk)) snapshot += chunk.data();
    ASSERT_TRUE(reader->Finish().ok());
  }
  auto import = [&](const std::string& id, const std::string& data) {
    grpc::ClientContext context;
    v1::SessionInfo info;
    auto writer = client.sessions().ImportSession(&context, &info);
    for (size_t offset = 0; offset < data.size(); offset += 4096) {
      v1::SessionChunk chunk;
      if (offset == 0) chunk.set_session_id(id);
      chunk.set_data(data.substr(offset, 4096));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  };
  EXPECT_TRUE(import("copy", snapshot).ok());
  const grpc::Status over = import("too-big", snapshot + "x");
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << over.error_message();
  EXPECT_THAT(over.error_message(),
              HasSubstr(absl::StrCat("session \"too-big\": data: more than ", snapshot.size(),
                                     " bytes, larger than any snapshot of this model")));
  // Far more: refused as soon as the limit is passed, the same way.
  const grpc::Status far_over = import("far-too-big", std::string(10 * snapshot.size(), 'z'));
  EXPECT_EQ(far_over.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace hgrn2::server

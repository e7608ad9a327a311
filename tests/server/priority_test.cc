// Priority over gRPC, end to end: with every seat taken, a request of higher priority pauses a
// running one of lower priority (swapped out), and the paused one later resumes exactly where it
// was. Priorities are "higher value first" (proto/hgrn2/v1/inference.proto; the opposite of vLLM).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/test_client.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

// hgrn2_preemptions_total, whatever its labels.
double Preemptions(int metrics_port) {
  const std::string scrape = Scrape(metrics_port);
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (absl::StartsWith(line, "hgrn2_preemptions_total")) {
      return std::stod(std::string(line.substr(line.rfind(' ') + 1)));
    }
  }
  return -1.0;
}

v1::GenerateRequest Greedy(const std::vector<int32_t>& prompt, uint32_t max_new_tokens,
                           int32_t priority) {
  v1::GenerateRequest request = IdsRequest(prompt, max_new_tokens);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_ignore_eos(true);
  request.set_priority(priority);
  return request;
}

TEST(PriorityTest, HigherPriorityArrivalPreemptsARunningLowerOneThatResumesExactly) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.engine.max_running = 1;  // one seat: the two cannot run side by side
  options.engine.swap_slots = 2;
  options.metrics_port = testing::FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->port());

  // Long enough that it is still running when the second request arrives (tiny-a decodes
  // thousands of tokens a second; a gRPC round trip on loopback takes well under a millisecond).
  const v1::GenerateRequest low = Greedy({1, 17, 42}, 3000, /*priority=*/-1);
  const v1::GenerateRequest high = Greedy({1, 5, 6, 7}, 16, /*priority=*/5);
  // Each alone: the references.
  const Client::Stream low_alone = client.Generate(low);
  ASSERT_TRUE(low_alone.status.ok()) << low_alone.status.error_message();
  ASSERT_EQ(low_alone.ids.size(), 3000u);
  const Client::Stream high_alone = client.Generate(high);
  ASSERT_TRUE(high_alone.status.ok()) << high_alone.status.error_message();
  const double preemptions_before = Preemptions((*server)->metrics_port());
  ASSERT_GE(preemptions_before, 0);

  // The low one streams; once its first tokens have arrived, the high one comes.
  grpc::ClientContext low_context;
  low_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> low_reader =
      client.stub().Generate(&low_context, low);
  std::vector<int32_t> low_ids;
  v1::GenerateResponse message;
  ASSERT_TRUE(low_reader->Read(&message));
  low_ids.insert(low_ids.end(), message.token_ids().begin(), message.token_ids().end());
  ASSERT_LT(low_ids.size(), 3000u) << "the low-priority request ended before the high one came";

  const Client::Stream high_contended = client.Generate(high);
  ASSERT_TRUE(high_contended.status.ok()) << high_contended.status.error_message();
  // With one seat, the high one finished while the low one still had tokens to go: it was
  // swapped out for it. The scheduler counts exactly one preemption.
  EXPECT_EQ(Preemptions((*server)->metrics_port()), preemptions_before + 1);
  EXPECT_EQ(high_contended.ids, high_alone.ids);

  while (low_reader->Read(&message)) {
    low_ids.insert(low_ids.end(), message.token_ids().begin(), message.token_ids().end());
  }
  const grpc::Status low_status = low_reader->Finish();
  ASSERT_TRUE(low_status.ok()) << low_status.error_message();
  // Resumed from its swapped-out state: token for token what it gives alone.
  ASSERT_EQ(low_ids.size(), low_alone.ids.size());
  EXPECT_EQ(low_ids, low_alone.ids);
  (*server)->Shutdown(absl::Seconds(5));
}

// The same two requests with the priorities the other way round: the running request has the
// higher priority, so the newcomer waits its turn and nothing is preempted.
TEST(PriorityTest, LowerPriorityArrivalWaitsForTheRunningOne) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.engine.max_running = 1;
  options.engine.swap_slots = 2;
  options.metrics_port = testing::FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->port());
  const double preemptions_before = Preemptions((*server)->metrics_port());

  const v1::GenerateRequest running = Greedy({1, 17, 42}, 2000, /*priority=*/5);
  const v1::GenerateRequest waiting = Greedy({1, 5, 6, 7}, 16, /*priority=*/-1);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      client.stub().Generate(&context, running);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const Client::Stream second = client.Generate(waiting);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  while (reader->Read(&message)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(Preemptions((*server)->metrics_port()), preemptions_before);
  (*server)->Shutdown(absl::Seconds(5));
}

}  // namespace
}  // namespace hgrn2::server

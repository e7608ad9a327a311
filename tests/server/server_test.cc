// The gRPC server in-process over real loopback gRPC (CPU backend, fixture models): streaming,
// agreement with the fla golden outputs, concurrency, sampling, every bad input, cancellation,
// deadlines, slow readers, health, drain, and the metrics endpoint.
#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/checkpoint/weight_file.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "tests/server/test_client.h"
#include "tests/support/failing_backend.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// A model folder that pairs fixture weights with a fixture tokenizer (V = 1000 both).
std::filesystem::path ModelWithTokenizer(const std::string& tokenizer_file) {
  const std::filesystem::path dir = testing::MakeTempDir();
  const std::filesystem::path weights = testing::TestDataDir() / "u-k3-nolb";
  std::filesystem::copy_file(weights / "config.json", dir / "config.json");
  std::filesystem::copy_file(weights / "model.safetensors", dir / "model.safetensors");
  std::filesystem::copy_file(testing::TestDataDir() / "tokenizers" / "llama-sp" / tokenizer_file,
                             dir / tokenizer_file);
  return dir;
}

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->port());
  }
  void StartServer() { StartServer(TestOptions(testing::TestDataDir() / "tiny-a")); }

  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

// Greedy decoding through the server gives fla's greedy continuation of the golden prompts (EOS
// banned, as the fixture was made), in order, one or more tokens per message, with the finish
// reason and usage on the last message only.
TEST_F(ServerTest, GreedyStreamEqualsTheGoldenContinuation) {
  StartServer();
  const std::filesystem::path dir = testing::TestDataDir() / "tiny-a";
  absl::StatusOr<WeightFile> golden = WeightFile::Open(dir / "golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto ids_of = [&](const std::string& name) {
    absl::StatusOr<TensorView> view = golden->Tensor(name);
    EXPECT_TRUE(view.ok()) << view.status();
    std::vector<int32_t> ids(static_cast<size_t>(view->num_elements()));
    std::memcpy(ids.data(), view->bytes.data(), ids.size() * 4);
    return std::make_pair(ids, view->shape);
  };
  const auto [prompts, prompt_shape] = ids_of("short_ids");
  const auto [greedy, greedy_shape] = ids_of("greedy_ids");
  for (int64_t row = 0; row < prompt_shape[0]; ++row) {
    const std::vector<int32_t> prompt(prompts.begin() + row * prompt_shape[1],
                                      prompts.begin() + (row + 1) * prompt_shape[1]);
    v1::GenerateRequest request = IdsRequest(prompt, static_cast<uint32_t>(greedy_shape[1]));
    request.mutable_sampling()->set_temperature(0.0f);
    (*request.mutable_sampling()->mutable_logit_bias())[2] = -1e38f;  // EOS banned
    const Client::Stream stream = client_->Generate(request);
    ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
    const std::vector<int32_t> want(greedy.begin() + row * greedy_shape[1],
                                    greedy.begin() + (row + 1) * greedy_shape[1]);
    EXPECT_EQ(stream.ids, want) << "prompt " << row;
    ASSERT_FALSE(stream.messages.empty());
    for (size_t m = 0; m + 1 < stream.messages.size(); ++m) {
      EXPECT_EQ(stream.messages[m].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
      EXPECT_FALSE(stream.messages[m].has_usage());
      EXPECT_EQ(stream.messages[m].logprobs_size(), stream.messages[m].token_ids_size());
    }
    const v1::GenerateResponse& last = stream.messages.back();
    EXPECT_EQ(last.finish_reason(), v1::LENGTH);
    EXPECT_EQ(last.usage().prompt_tokens(), prompt.size());
    EXPECT_EQ(last.usage().generated_tokens(), want.size());
    EXPECT_FALSE(stream.messages.front().request_id().empty());
  }
}

// 32 streams at once, each with its own seed and length, give exactly what each gives alone.
TEST_F(ServerTest, ConcurrentStreamsEqualTheirSoloResults) {
  StartServer();
  auto request_for = [](int i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 3 + (i * 7) % 40; ++t) prompt.push_back((i * 31 + t * 17) % 500 + 3);
    v1::GenerateRequest request = IdsRequest(prompt, static_cast<uint32_t>(5 + (i * 13) % 40));
    request.mutable_sampling()->set_temperature(0.8f);
    request.mutable_sampling()->set_top_k(i % 3 == 0 ? 0 : 20);
    request.mutable_sampling()->set_seed(1000 + static_cast<uint64_t>(i));
    request.set_ignore_eos(true);
    request.set_logprobs(i % 4 == 0 ? 3 : 0);
    return request;
  };
  std::vector<Client::Stream> solo;
  for (int i = 0; i < 32; ++i) solo.push_back(client_->Generate(request_for(i)));
  std::vector<std::future<Client::Stream>> together;
  for (int i = 0; i < 32; ++i) {
    together.push_back(
        std::async(std::launch::async, [&, i] { return client_->Generate(request_for(i)); }));
  }
  for (int i = 0; i < 32; ++i) {
    const Client::Stream stream = together[i].get();
    ASSERT_TRUE(solo[i].status.ok()) << solo[i].status.error_message();
    ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
    EXPECT_EQ(stream.ids, solo[i].ids) << "stream " << i;
    EXPECT_EQ(stream.ids.size(), request_for(i).max_new_tokens()) << "stream " << i;
    // Alternatives when asked: 3 per token, sorted.
    for (const v1::GenerateResponse& message : stream.messages) {
      for (const v1::TokenLogprob& logprob : message.logprobs()) {
        EXPECT_EQ(logprob.top_size(), i % 4 == 0 ? 3 : 0);
        for (int k = 1; k < logprob.top_size(); ++k) {
          EXPECT_GE(logprob.top(k - 1).logprob(), logprob.top(k).logprob());
        }
      }
    }
  }
  // A different seed gives a different draw.
  v1::GenerateRequest other = request_for(5);
  other.mutable_sampling()->set_seed(99999);
  EXPECT_NE(client_->Generate(other).ids, solo[5].ids);
}

// Every kind of bad input gets INVALID_ARGUMENT (or its own code) naming the field.
TEST_F(ServerTest, BadRequestsGetCodesNamingTheField) {
  StartServer();
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    grpc::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"no prompt", [](v1::GenerateRequest& r) { r.clear_token_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt"},
      {"empty ids", [](v1::GenerateRequest& r) { r.mutable_token_ids()->clear_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids: empty"},
      {"id out of range", [](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(512); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids[3] = 512"},
      {"negative id", [](v1::GenerateRequest& r) { r.mutable_token_ids()->set_ids(0, -1); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids[0] = -1"},
      {"text without tokenizer", [](v1::GenerateRequest& r) { r.set_text("hello"); },
       grpc::StatusCode::INVALID_ARGUMENT, "no tokenizer"},
      {"negative temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1.0f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"NaN temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"top_p 0", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0.0f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_p above 1", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"negative top_k", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-2); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"},
      {"min_p above 1", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_min_p(2.0f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.min_p"},
      {"repetition penalty 0",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"presence penalty 3",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_presence_penalty(3.0f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.presence_penalty"},
      {"logit bias id",
       [](v1::GenerateRequest& r) { (*r.mutable_sampling()->mutable_logit_bias())[600] = 1; },
       grpc::StatusCode::INVALID_ARGUMENT, "logit_bias"},
      {"max_new_tokens over the limit",
       [](v1::GenerateRequest& r) { r.set_max_new_tokens(200000); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens"},
      {"too many logprobs", [](v1::GenerateRequest& r) { r.set_logprobs(21); },
       grpc::StatusCode::INVALID_ARGUMENT, "logprobs"},
      {"stop strings without tokenizer", [](v1::GenerateRequest& r) { r.add_stop("x"); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop"},
      {"stop id out of range", [](v1::GenerateRequest& r) { r.add_stop_token_ids(9999); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_token_ids[0]"},
      {"request id with a space", [](v1::GenerateRequest& r) { r.set_request_id("a b"); },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
      {"no such session", [](v1::GenerateRequest& r) { r.set_session_id("chat-1"); },
       grpc::StatusCode::NOT_FOUND, "session_id: session \"chat-1\" not found"},
      {"session id with a slash", [](v1::GenerateRequest& r) { r.set_session_id("a/b"); },
       grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"save as an id too long",
       [](v1::GenerateRequest& r) { r.set_save_session_as(std::string(129, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "save_session_as: 129 bytes"},
      {"n over the limit", [](v1::GenerateRequest& r) { r.set_n(17); },
       grpc::StatusCode::INVALID_ARGUMENT, "n: must be at most 16"},
      {"n > 1 saving a session",
       [](v1::GenerateRequest& r) {
         r.set_n(2);
         r.set_save_session_as("s");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "save_session_as"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = IdsRequest({1, 2, 3}, 4);
    c.edit(request);
    const Client::Stream stream = client_->Generate(request);
    EXPECT_EQ(stream.status.error_code(), c.code)
        << c.name << ": " << stream.status.error_message();
    EXPECT_THAT(stream.status.error_message(), HasSubstr(c.needle)) << c.name;
    EXPECT_TRUE(stream.messages.empty()) << c.name;
  }
  // A prompt over the limit.
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  server_.reset();
  options.limits.max_prompt_tokens = 8;
  StartServer(options);
  const Client::Stream long_prompt = client_->Generate(IdsRequest(std::vector<int32_t>(9, 5), 2));
  EXPECT_EQ(long_prompt.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_prompt.status.error_message(), HasSubstr("9 tokens, the limit is 8"));
  // Scoring: one token and no context.
  v1::ScoreRequest score;
  score.mutable_continuation_ids()->add_ids(5);
  v1::ScoreResponse response;
  const grpc::Status one = client_->Score(score, &response);
  EXPECT_EQ(one.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(one.error_message(), HasSubstr("nothing to score"));
  // The server still serves.
  EXPECT_TRUE(client_->Generate(IdsRequest({1, 2, 3}, 3)).status.ok());
}

// Score gives log p of each continuation token: equal to the golden float64 reference, summed,
// with is_greedy from the argmax, and the first token unscored without a context.
TEST_F(ServerTest, ScoreMatchesTheGoldenReference) {
  StartServer();
  const std::filesystem::path dir = testing::TestDataDir() / "tiny-a";
  absl::StatusOr<WeightFile> golden = WeightFile::Open(dir / "golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  absl::StatusOr<TensorView> ids_view = golden->Tensor("short_ids");
  ASSERT_TRUE(ids_view.ok());
  const int64_t length = ids_view->shape[1];
  std::vector<int32_t> ids(static_cast<size_t>(length));
  std::memcpy(ids.data(), ids_view->bytes.data(), ids.size() * 4);  // the first prompt
  absl::StatusOr<std::vector<float>> logits =
      golden->ReadFloat("ref64_short_logits", golden->Tensor("ref64_short_logits")->shape);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = 512;
  auto reference = [&](int64_t position) {  // log p(ids[position + 1] | ids[..position])
    const float* row = logits->data() + position * vocab;
    double max = row[0], sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    return row[ids[position + 1]] - max - std::log(sum);
  };

  const int64_t context = 20;
  v1::ScoreRequest request;
  for (int64_t t = 0; t < context; ++t) request.mutable_context_ids()->add_ids(ids[t]);
  for (int64_t t = context; t < length; ++t) request.mutable_continuation_ids()->add_ids(ids[t]);
  request.set_top_logprobs(2);
  v1::ScoreResponse response;
  grpc::Status status = client_->Score(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.token_ids_size(), length - context);
  ASSERT_EQ(response.token_logprobs_size(), length - context);
  ASSERT_EQ(response.top_logprobs_size(), length - context);
  double total = 0.0;
  for (int64_t i = 0; i < length - context; ++i) {
    EXPECT_EQ(response.token_ids(i), ids[context + i]);
    EXPECT_NEAR(response.token_logprobs(i), reference(context + i - 1), 2e-4) << "token " << i;
    EXPECT_EQ(response.top_logprobs(i).top_size(), 2);
    total += response.token_logprobs(i);
  }
  EXPECT_NEAR(response.total_logprob(), total, 1e-3);
  EXPECT_FALSE(response.is_greedy());  // random ids
  EXPECT_EQ(response.unscored_tokens(), 0u);
  EXPECT_EQ(response.context_tokens(), static_cast<uint32_t>(context));

  // No context: the first token only conditions.
  v1::ScoreRequest bare;
  for (int64_t t = 0; t < 6; ++t) bare.mutable_continuation_ids()->add_ids(ids[t]);
  status = client_->Score(bare, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.unscored_tokens(), 1u);
  ASSERT_EQ(response.token_logprobs_size(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(response.token_logprobs(i), reference(i), 2e-4);

  // The greedy continuation scores as greedy.
  v1::GenerateRequest generate = IdsRequest({ids.begin(), ids.begin() + 10}, 8);
  generate.mutable_sampling()->set_temperature(0.0f);
  generate.set_ignore_eos(true);
  const Client::Stream stream = client_->Generate(generate);
  ASSERT_TRUE(stream.status.ok());
  v1::ScoreRequest greedy;
  for (int t = 0; t < 10; ++t) greedy.mutable_context_ids()->add_ids(ids[t]);
  for (int32_t id : stream.ids) greedy.mutable_continuation_ids()->add_ids(id);
  status = client_->Score(greedy, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.is_greedy());
}

// Text in, text out with a SentencePiece tokenizer.model (loaded beside libprotobuf) and with the
// equivalent tokenizer.json: tokenize/detokenize round trip, streamed text equal to the decode of
// the streamed ids, and stop strings.
TEST_F(ServerTest, TextWithBothTokenizerFiles) {
  for (const std::string file : {"tokenizer.model", "tokenizer.json"}) {
    SCOPED_TRACE(file);
    server_.reset();
    StartServer(TestOptions(ModelWithTokenizer(file)));
    grpc::ClientContext tokenize_context;
    v1::TokenizeRequest tokenize;
    tokenize.set_text("The quick brown fox");
    v1::TokenizeResponse tokens;
    ASSERT_TRUE(client_->stub().Tokenize(&tokenize_context, tokenize, &tokens).ok());
    ASSERT_GT(tokens.token_ids_size(), 2);
    EXPECT_EQ(tokens.token_ids(0), 1);  // BOS
    EXPECT_EQ(tokens.pieces(0), "<s>");
    EXPECT_EQ(tokens.pieces_size(), tokens.token_ids_size());
    grpc::ClientContext detokenize_context;
    v1::DetokenizeRequest detokenize;
    detokenize.mutable_token_ids()->CopyFrom(tokens.token_ids());
    v1::DetokenizeResponse text;
    ASSERT_TRUE(client_->stub().Detokenize(&detokenize_context, detokenize, &text).ok());
    EXPECT_EQ(text.text(), "The quick brown fox");

    v1::GenerateRequest request;
    request.set_text("The quick brown fox");
    request.set_max_new_tokens(40);
    request.set_ignore_eos(true);
    request.mutable_sampling()->set_seed(7);
    const Client::Stream stream = client_->Generate(request);
    ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
    EXPECT_EQ(stream.messages.back().usage().prompt_tokens(),
              static_cast<uint32_t>(tokens.token_ids_size()));
    grpc::ClientContext decode_context;
    v1::DetokenizeRequest decode;
    for (int32_t id : stream.ids) decode.add_token_ids(id);
    ASSERT_TRUE(client_->stub().Detokenize(&decode_context, decode, &text).ok());
    EXPECT_EQ(stream.text, text.text());

    // A stop string taken from the middle of that text ends the stream before it.
    const std::string full = stream.text;
    // Three ASCII characters from the second half (the text may hold multi-byte characters).
    size_t at = full.size() / 2;
    auto ascii = [&](size_t i) { return static_cast<unsigned char>(full[i]) < 0x80; };
    while (at + 3 <= full.size() && !(ascii(at) && ascii(at + 1) && ascii(at + 2))) ++at;
    ASSERT_LE(at + 3, full.size()) << "no ASCII run in: " << full;
    const std::string stop = full.substr(at, 3);
    request.add_stop(stop);
    const Client::Stream stopped = client_->Generate(request);
    ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
    EXPECT_EQ(stopped.messages.back().finish_reason(), v1::STOP);
    EXPECT_EQ(stopped.messages.back().stop_string(), stop);
    EXPECT_EQ(stopped.text, full.substr(0, full.find(stop)));
    EXPECT_LT(stopped.ids.size(), stream.ids.size());
    EXPECT_EQ(stopped.messages.back().usage().generated_tokens(), stopped.ids.size());
  }
}

// A client that cancels, or whose deadline passes, frees its sequence; the metrics count it.
TEST_F(ServerTest, CancellationAndDeadlinesFreeTheSequence) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.metrics_port = testing::FreeLoopbackPort();
  StartServer(options);
  ASSERT_EQ(server_->metrics_port(), options.metrics_port);

  v1::GenerateRequest endless = IdsRequest({1, 2, 3}, 100000);
  endless.set_ignore_eos(true);
  {
    grpc::ClientContext context;
    auto reader = client_->stub().Generate(&context, endless);
    v1::GenerateResponse message;
    ASSERT_TRUE(reader->Read(&message));
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const Client::Stream late = client_->Generate(endless, absl::Milliseconds(300));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  // Both sequences are gone: no stream, no running sequence, no slot.
  std::string scrape;
  for (int i = 0; i < 100; ++i) {
    scrape = Scrape(server_->metrics_port());
    if (MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})") == 0 &&
        MetricValue(scrape, R"(hgrn2_active_streams{model_name="tiny-a"})") == 0 &&
        MetricValue(scrape, R"(hgrn2_state_slots_used{model_name="tiny-a"})") == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})"), 0) << scrape;
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_active_streams{model_name="tiny-a"})"), 0) << scrape;
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_state_slots_used{model_name="tiny-a"})"), 0) << scrape;
  // The server learns of a passed deadline either from its own timer or from the client's
  // cancellation, which can come first on a loaded machine; it counts DEADLINE_EXCEEDED when the
  // cancellation is within kDeadlineSlack of the deadline, else CANCELLED. So the second call is
  // one or the other, and the first is CANCELLED.
  const double cancelled = MetricValue(
      scrape, R"(hgrn2_requests_total{code="CANCELLED",model_name="tiny-a",rpc="Generate"})");
  const double deadline_exceeded = MetricValue(
      scrape,
      R"(hgrn2_requests_total{code="DEADLINE_EXCEEDED",model_name="tiny-a",rpc="Generate"})");
  EXPECT_GE(cancelled, 1) << scrape;
  EXPECT_EQ(cancelled + std::max(deadline_exceeded, 0.0), 2) << scrape;
  EXPECT_GT(MetricValue(scrape, R"(hgrn2_generated_tokens_total{model_name="tiny-a"})"), 0);
  EXPECT_GT(MetricValue(scrape, R"(hgrn2_time_to_first_token_seconds_count{model_name="tiny-a"})"),
            0);
  EXPECT_GT(MetricValue(scrape, R"(hgrn2_decode_batch_size_count{model_name="tiny-a"})"), 0);
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_serving{model_name="tiny-a"})"), 1);
}

// A reader that stops reading holds only its own stream: another finishes meanwhile.
TEST_F(ServerTest, SlowReaderDoesNotStallOthers) {
  StartServer();
  v1::GenerateRequest long_request = IdsRequest({4, 5, 6}, 20000);
  long_request.set_ignore_eos(true);
  grpc::ClientContext stalled_context;
  auto stalled = client_->stub().Generate(&stalled_context, long_request);
  v1::GenerateResponse message;
  ASSERT_TRUE(stalled->Read(&message));  // then it reads nothing for a while
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  v1::GenerateRequest other_request = IdsRequest({7, 8, 9}, 200);
  other_request.set_ignore_eos(true);
  const Client::Stream other = client_->Generate(other_request);
  ASSERT_TRUE(other.status.ok()) << other.status.error_message();
  EXPECT_EQ(other.ids.size(), 200u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  // The stalled stream still has everything when it reads on.
  size_t received = static_cast<size_t>(message.token_ids_size());
  grpc::Status status;
  while (stalled->Read(&message)) received += static_cast<size_t>(message.token_ids_size());
  status = stalled->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(received, 20000u);
}

// Health: SERVING for the server and the inference service after start; during a drain,
// NOT_SERVING and new calls UNAVAILABLE while the call in flight completes.
TEST_F(ServerTest, HealthAndGracefulDrain) {
  StartServer();
  EXPECT_EQ(client_->Health(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(client_->Health("hgrn2.v1.Inference"), HealthCheckResponse::SERVING);

  v1::GenerateRequest request = IdsRequest({4, 5, 6}, 3000);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = client_->stub().Generate(&context, request);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  size_t received = static_cast<size_t>(message.token_ids_size());
  std::thread drain([&] { server_->Shutdown(absl::Seconds(60)); });
  // Wait for the drain to begin.
  HealthCheckResponse::ServingStatus status = HealthCheckResponse::SERVING;
  for (int i = 0; i < 200 && status == HealthCheckResponse::SERVING; ++i) {
    status = client_->Health("");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
  const Client::Stream refused = client_->Generate(IdsRequest({1, 2}, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  while (reader->Read(&message)) received += static_cast<size_t>(message.token_ids_size());
  const grpc::Status finished = reader->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  EXPECT_EQ(received, 3000u);
  EXPECT_EQ(message.finish_reason(), v1::LENGTH);
  drain.join();
}

// A drain that runs out of time ends the remaining streams with UNAVAILABLE.
TEST_F(ServerTest, DrainTimeoutCutsStreamsOff) {
  StartServer();
  v1::GenerateRequest request = IdsRequest({4, 5, 6}, 100000);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = client_->stub().Generate(&context, request);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown(absl::Milliseconds(200));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The periodic probe turns health NOT_SERVING while the device fails, and SERVING again after.
TEST_F(ServerTest, HealthProbeFollowsTheDevice) {
  auto backend = std::make_shared<testing::FailingBackend>();
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.backend = backend;
  options.health_check_interval = absl::Milliseconds(20);
  StartServer(options);
  auto wait_for = [&](HealthCheckResponse::ServingStatus want) {
    HealthCheckResponse::ServingStatus status = client_->Health("");
    for (int i = 0; i < 500 && status != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      status = client_->Health("");
    }
    return status;
  };
  EXPECT_EQ(wait_for(HealthCheckResponse::SERVING), HealthCheckResponse::SERVING);
  backend->fail_prefill = true;
  EXPECT_EQ(wait_for(HealthCheckResponse::NOT_SERVING), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(client_->Health("hgrn2.v1.Inference"), HealthCheckResponse::NOT_SERVING);
  // Requests meanwhile fail with INTERNAL, and the server stays up.
  const Client::Stream failed = client_->Generate(IdsRequest({1, 2, 3}, 4));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::INTERNAL);
  backend->fail_prefill = false;
  EXPECT_EQ(wait_for(HealthCheckResponse::SERVING), HealthCheckResponse::SERVING);
  EXPECT_TRUE(client_->Generate(IdsRequest({1, 2, 3}, 4)).status.ok());
}

// Beyond the queue's length, requests get RESOURCE_EXHAUSTED; the ones taken all finish.
TEST_F(ServerTest, OverloadIsResourceExhausted) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.engine.max_running = 1;
  options.engine.num_slots = 1;
  options.engine.max_queued = 2;
  options.engine.swap_slots = 0;
  StartServer(options);
  v1::GenerateRequest request = IdsRequest({1, 2, 3}, 400);
  request.set_ignore_eos(true);
  std::vector<std::future<Client::Stream>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(std::async(std::launch::async, [&] { return client_->Generate(request); }));
  }
  int ok = 0, exhausted = 0;
  for (auto& stream : streams) {
    const Client::Stream result = stream.get();
    if (result.status.ok()) {
      ++ok;
      EXPECT_EQ(result.ids.size(), 400u);
    } else {
      EXPECT_EQ(result.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << result.status.error_message();
      EXPECT_THAT(result.status.error_message(), HasSubstr("queue is full"));
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  EXPECT_EQ(ok + exhausted, 8);
}

TEST_F(ServerTest, ModelInfoDescribesTheModel) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  // Distinct values, so that a limit reported in another's field shows.
  RequestLimits& l = options.limits;
  l.max_stop_total_bytes = 1001;
  l.max_stop_token_ids = 1002;
  l.max_logit_bias = 1003;
  l.max_request_id_bytes = 1004;
  l.max_text_bytes = int64_t{5} << 30;  // beyond 32 bits
  l.max_detokenize_ids = 1006;
  options.max_receive_message_bytes = 1007 << 10;
  options.max_streams_per_connection = 1008;
  StartServer(options);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(client_->stub().GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_type(), "hgrn2");
  EXPECT_EQ(info.vocab_size(), 512u);
  EXPECT_EQ(info.hidden_size(), 128u);
  EXPECT_EQ(info.num_layers(), 3u);
  EXPECT_EQ(info.num_parameters(), 919168u);  // the tensors of tiny-a's model.safetensors
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_EQ(info.state_bytes_per_sequence(), 3u * 4 * 32 * 32 * 4);
  EXPECT_EQ(info.limits().max_new_tokens(), 100000u);
  // Every limit a client must stay under is reported, each from its flag's value.
  EXPECT_EQ(info.limits().max_stop_total_bytes(), 1001u);
  EXPECT_EQ(info.limits().max_stop_token_ids(), 1002u);
  EXPECT_EQ(info.limits().max_logit_bias(), 1003u);
  EXPECT_EQ(info.limits().max_request_id_bytes(), 1004u);
  EXPECT_EQ(info.limits().max_text_bytes(), uint64_t{5} << 30);
  EXPECT_EQ(info.limits().max_detokenize_ids(), 1006u);
  EXPECT_EQ(info.limits().max_message_bytes(), 1007u << 10);
  EXPECT_EQ(info.limits().max_streams_per_connection(), 1008u);
  EXPECT_TRUE(info.tokenizer().empty());
  EXPECT_FALSE(info.server_version().empty());
}

// --dtype fp8 keeps the projections in FP8 (here on the CPU backend, whose FP8 Gemm is the
// reference of the CUDA kernels): reported as such, named apart from the BF16 model (a session
// does not cross), and serving.
TEST_F(ServerTest, ServesFp8WeightsWhenAsked) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.dtype = "fp8";
  StartServer(options);
  v1::ModelInfo fp8_info;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->stub().GetModelInfo(&context, v1::GetModelInfoRequest(), &fp8_info).ok());
  }
  EXPECT_EQ(fp8_info.dtype(), "fp8");
  v1::GenerateRequest request = IdsRequest({5, 17, 301, 44}, 12);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_ignore_eos(true);
  const Client::Stream fp8 = client_->Generate(request);
  ASSERT_TRUE(fp8.status.ok()) << fp8.status.error_message();
  EXPECT_EQ(fp8.ids.size(), 12u);

  StartServer(TestOptions(testing::TestDataDir() / "tiny-a"));
  v1::ModelInfo plain_info;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(
        client_->stub().GetModelInfo(&context, v1::GetModelInfoRequest(), &plain_info).ok());
  }
  EXPECT_EQ(plain_info.dtype(), "f32");  // the CPU backend computes in f32
  EXPECT_NE(fp8_info.model_fingerprint(), plain_info.model_fingerprint());
}

TEST(ServerStart, BadModelAndPortAreClearErrors) {
  ServerOptions options = TestOptions(testing::TestDataDir() / "no-such-model");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("no-such-model"));
  options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.device = "tpu";
  EXPECT_FALSE(Server::Start(options).ok());
  options = TestOptions(testing::TestDataDir() / "tiny-a");
  options.dtype = "int4";
  server = Server::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--dtype"));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("fp8"));
}

}  // namespace
}  // namespace hgrn2::server

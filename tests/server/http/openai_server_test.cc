// The OpenAI-compatible HTTP API in-process over loopback: greedy ids and log-probabilities equal
// the golden fixtures and the gRPC API's on every fixture; text, streams, n, stops and chat on a
// model with a tokenizer; every error in OpenAI's shape with its status; API keys and tenant
// limits; a client that disconnects frees its sequence; a slow reader stalls nobody; queue full
// and draining.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/checkpoint/weight_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/access_control.h"
#include "server/server.h"
#include "tests/server/http/http_test_client.h"
#include "tests/server/test_client.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;
using testing_http::Post;
using testing_http::Reply;
using testing_http::Request;
using Json = nlohmann::json;

// fixture weights (V = 1000) with the llama-sp tokenizer.json, and no chat template.
std::filesystem::path ModelWithTokenizer() {
  const std::filesystem::path dir = testing::MakeTempDir();
  const std::filesystem::path weights = testing::TestDataDir() / "u-k3-nolb";
  std::filesystem::copy_file(weights / "config.json", dir / "config.json");
  std::filesystem::copy_file(weights / "model.safetensors", dir / "model.safetensors");
  std::filesystem::copy_file(testing::TestDataDir() / "tokenizers" / "llama-sp" / "tokenizer.json",
                             dir / "tokenizer.json");
  return dir;
}

ServerOptions HttpOptions(const std::filesystem::path& model) {
  ServerOptions options = TestOptions(model);
  options.http_port = testing::FreeLoopbackPort();
  options.metrics_port = testing::FreeLoopbackPort();
  return options;
}

// A streaming request left open: the request sent and the response's header read; the test reads
// on (or not) and closes it.
class OpenStream {
 public:
  OpenStream(int port, const Json& body, const std::string& extra_headers = "") {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    // A small receive buffer, so a reader that stops reading holds the server's writes back soon.
    const int small = 4096;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    const std::string text = body.dump();
    const std::string request = absl::StrCat(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        extra_headers, "Content-Length: ", text.size(), "\r\n\r\n", text);
    EXPECT_EQ(write(fd_, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  }
  ~OpenStream() { Close(); }
  // Reads until `needle` has arrived (or the connection ends); what was read.
  std::string ReadUntil(const std::string& needle) {
    char buffer[4096];
    while (!absl::StrContains(read_, needle)) {
      const ssize_t n = read(fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      read_.append(buffer, static_cast<size_t>(n));
    }
    return read_;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string read_;
};

class OpenAiServerTest : public ::testing::Test {
 protected:
  void StartServer(const ServerOptions& options) {
    server_.reset();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->http_port(), 0);
    client_ = std::make_unique<Client>(server_->port());
  }
  int http() const { return server_->http_port(); }

  // Waits until the engine holds no sequence, slot or stream; the last scrape.
  std::string AwaitIdle() {
    std::string scrape;
    for (int i = 0; i < 250; ++i) {
      scrape = Scrape(server_->metrics_port());
      if (MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})") == 0 &&
          MetricValue(scrape, R"(hgrn2_active_streams{model_name="tiny-a"})") == 0 &&
          MetricValue(scrape, R"(hgrn2_state_slots_used{model_name="tiny-a"})") == 0 &&
          MetricValue(scrape, R"(hgrn2_queue_depth{model_name="tiny-a"})") == 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return scrape;
  }

  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

std::vector<int32_t> ReadIds(const WeightFile& golden, const std::string& name, int64_t row) {
  absl::StatusOr<TensorView> view = golden.Tensor(name);
  EXPECT_TRUE(view.ok()) << view.status();
  const int64_t cols = view->shape[1];
  std::vector<int32_t> all(static_cast<size_t>(view->num_elements()));
  std::memcpy(all.data(), view->bytes.data(), all.size() * 4);
  return std::vector<int32_t>(all.begin() + row * cols, all.begin() + (row + 1) * cols);
}

// "token_id:17" (a model without a tokenizer names its tokens so) → 17.
int32_t IdOf(const std::string& token) {
  EXPECT_TRUE(absl::StartsWith(token, "token_id:")) << token;
  return std::stoi(token.substr(9));
}

// Every golden fixture: greedy ids through /v1/completions equal fla's continuation, and the
// log-probabilities (chosen and alternatives) equal the gRPC API's for the same request, bit for
// bit; echo with max_tokens 0 scores the prompt exactly as the gRPC Score does.
TEST_F(OpenAiServerTest, GreedyAndLogprobsEqualTheGoldenFixturesAndGrpc) {
  int fixtures = 0;
  for (const auto& entry : std::filesystem::directory_iterator(testing::TestDataDir())) {
    if (!std::filesystem::exists(entry.path() / "golden.safetensors")) continue;
    ++fixtures;
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    StartServer(HttpOptions(entry.path()));
    absl::StatusOr<WeightFile> golden = WeightFile::Open(entry.path() / "golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    const std::vector<int32_t> prompt = ReadIds(*golden, "short_ids", 0);
    const std::vector<int32_t> want = ReadIds(*golden, "greedy_ids", 0);

    Json bias = Json::object();
    v1::GenerateRequest grpc_request = IdsRequest(prompt, static_cast<uint32_t>(want.size()));
    grpc_request.mutable_sampling()->set_temperature(0.0f);
    grpc_request.set_logprobs(2);
    for (int32_t eos : server_->config().eos_token_ids) {  // banned, as the fixtures were made
      bias[std::to_string(eos)] = -100;
      (*grpc_request.mutable_sampling()->mutable_logit_bias())[eos] = -100.0f;
    }
    const Reply reply = Post(http(), "/v1/completions",
                             {{"prompt", prompt},
                              {"max_tokens", want.size()},
                              {"temperature", 0},
                              {"logprobs", 2},
                              {"logit_bias", bias}});
    ASSERT_EQ(reply.status, 200) << reply.body;
    const Json& choice = reply.json["choices"][0];
    EXPECT_EQ(choice["finish_reason"], "length");
    const Json& logprobs = choice["logprobs"];
    std::vector<int32_t> got;
    for (const Json& token : logprobs["tokens"]) got.push_back(IdOf(token.get<std::string>()));
    EXPECT_EQ(got, want);
    EXPECT_EQ(reply.json["usage"]["completion_tokens"], want.size());
    EXPECT_EQ(reply.json["usage"]["prompt_tokens"], prompt.size());

    const Client::Stream stream = client_->Generate(grpc_request);
    ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
    std::vector<v1::TokenLogprob> grpc_logprobs;
    for (const v1::GenerateResponse& m : stream.messages) {
      grpc_logprobs.insert(grpc_logprobs.end(), m.logprobs().begin(), m.logprobs().end());
    }
    EXPECT_EQ(stream.ids, want);
    ASSERT_EQ(grpc_logprobs.size(), got.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(logprobs["token_logprobs"][i].get<float>(), grpc_logprobs[i].logprob()) << i;
      std::map<int32_t, float> http_top, grpc_top;
      for (const auto& [token, value] : logprobs["top_logprobs"][i].items()) {
        http_top[IdOf(token)] = value.get<float>();
      }
      grpc_top[grpc_logprobs[i].token_id()] = grpc_logprobs[i].logprob();
      for (const v1::TopLogprob& top : grpc_logprobs[i].top())
        grpc_top[top.token_id()] = top.logprob();
      EXPECT_EQ(http_top, grpc_top) << i;
    }

    // echo + max_tokens 0 + logprobs: the prompt scored, the first token unscored.
    const Reply scored =
        Post(http(), "/v1/completions",
             {{"prompt", prompt}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}});
    ASSERT_EQ(scored.status, 200) << scored.body;
    const Json& echo = scored.json["choices"][0]["logprobs"];
    ASSERT_EQ(echo["token_logprobs"].size(), prompt.size());
    EXPECT_TRUE(echo["token_logprobs"][0].is_null());
    EXPECT_TRUE(echo["top_logprobs"][0].is_null());
    v1::ScoreRequest score;
    for (int32_t id : prompt) score.mutable_continuation_ids()->add_ids(id);
    v1::ScoreResponse scored_grpc;
    ASSERT_TRUE(client_->Score(score, &scored_grpc).ok());
    ASSERT_EQ(scored_grpc.token_logprobs_size(), static_cast<int>(prompt.size()) - 1);
    for (size_t i = 1; i < prompt.size(); ++i) {
      EXPECT_EQ(IdOf(echo["tokens"][i].get<std::string>()), prompt[i]);
      EXPECT_EQ(echo["token_logprobs"][i].get<float>(),
                scored_grpc.token_logprobs(static_cast<int>(i) - 1))
          << i;
    }
    EXPECT_EQ(scored.json["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(scored.json["usage"]["completion_tokens"], 0);
  }
  EXPECT_GE(fixtures, 5);
}

// Text: a completion equals the gRPC Generate's text; its stream's events join to the same text,
// end with [DONE], and carry usage when asked; n samples with a seed repeat; a stop string ends
// with finish_reason "stop" and vLLM's stop_reason; chat through the built-in template, whole and
// streamed, with logprobs.
TEST_F(OpenAiServerTest, TextStreamsSamplesStopsAndChat) {
  StartServer(HttpOptions(ModelWithTokenizer()));
  const Json request = {
      {"prompt", "Once upon a time"}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}};
  const Reply whole = Post(http(), "/v1/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_EQ(whole.json["object"], "text_completion");
  EXPECT_TRUE(absl::StartsWith(whole.json["id"].get<std::string>(), "cmpl-"));
  EXPECT_FALSE(whole.headers.at("x-request-id").empty());
  const std::string text = whole.json["choices"][0]["text"];
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(whole.json["usage"]["completion_tokens"], 12);

  v1::GenerateRequest grpc_request;
  grpc_request.set_text("Once upon a time");
  grpc_request.set_max_new_tokens(12);
  grpc_request.mutable_sampling()->set_temperature(0.0f);
  grpc_request.set_ignore_eos(true);
  const Client::Stream grpc_stream = client_->Generate(grpc_request);
  ASSERT_TRUE(grpc_stream.status.ok());
  EXPECT_EQ(text, grpc_stream.text);

  Json streamed = request;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const Reply stream = Post(http(), "/v1/completions", streamed);
  ASSERT_EQ(stream.status, 200) << stream.body;
  EXPECT_EQ(stream.headers.at("content-type"), "text/event-stream");
  EXPECT_TRUE(stream.done);
  ASSERT_GE(stream.events.size(), 2u);
  std::string joined;
  for (size_t i = 0; i + 1 < stream.events.size(); ++i) {
    joined += stream.events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(stream.events[stream.events.size() - 2]["choices"][0]["finish_reason"], "length");
  const Json& usage = stream.events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 12);

  // n = 3 with a seed: three choices, the same again.
  const Json sampled = {{"prompt", "The"}, {"max_tokens", 8},    {"n", 3},
                        {"seed", 7},       {"temperature", 1.0}, {"ignore_eos", true}};
  const Reply first = Post(http(), "/v1/completions", sampled);
  const Reply second = Post(http(), "/v1/completions", sampled);
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_EQ(first.json["choices"].size(), 3u);
  std::set<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(first.json["choices"][i]["index"], i);
    EXPECT_EQ(first.json["choices"][i]["text"], second.json["choices"][i]["text"]);
    texts.insert(first.json["choices"][i]["text"].get<std::string>());
  }
  EXPECT_GT(texts.size(), 1u);  // samples differ (seed + i)
  EXPECT_EQ(first.json["usage"]["completion_tokens"], 24);

  // A stop string taken from the greedy text itself: a later ASCII word of it.
  std::string stop;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    const bool ascii =
        std::all_of(word.begin(), word.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (ascii && word.size() >= 2 && text.find(std::string(word)) > 0) stop = std::string(word);
  }
  ASSERT_FALSE(stop.empty()) << text;
  Json stopping = request;
  stopping["stop"] = stop;
  const Reply stopped = Post(http(), "/v1/completions", stopping);
  ASSERT_EQ(stopped.status, 200) << stopped.body;
  EXPECT_EQ(stopped.json["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stopped.json["choices"][0]["stop_reason"], stop);
  EXPECT_EQ(stopped.json["choices"][0]["text"], text.substr(0, text.find(stop)));

  // Chat, with the built-in template (the model ships none).
  const Json chat = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                     {"max_completion_tokens", 6},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  const Reply answer = Post(http(), "/v1/chat/completions", chat);
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(answer.json["object"], "chat.completion");
  const Json& message = answer.json["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  ASSERT_EQ(answer.json["choices"][0]["logprobs"]["content"].size(), 6u);
  EXPECT_EQ(answer.json["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  std::string from_logprobs;
  for (const Json& entry : answer.json["choices"][0]["logprobs"]["content"]) {
    from_logprobs += entry["token"].get<std::string>();
  }
  EXPECT_EQ(from_logprobs, message["content"].get<std::string>());
  // The prompt is the rendered template: as /tokenize counts it.
  const Reply counted = Post(http(), "/tokenize", {{"messages", chat["messages"]}});
  ASSERT_EQ(counted.status, 200) << counted.body;
  EXPECT_EQ(answer.json["usage"]["prompt_tokens"], counted.json["count"]);

  Json chat_stream = chat;
  chat_stream["stream"] = true;
  const Reply chunks = Post(http(), "/v1/chat/completions", chat_stream);
  ASSERT_EQ(chunks.status, 200) << chunks.body;
  ASSERT_GE(chunks.events.size(), 3u);
  EXPECT_EQ(chunks.events.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks.events.back()["choices"][0]["finish_reason"], "length");
  std::string content;
  for (const Json& event : chunks.events) {
    EXPECT_EQ(event["object"], "chat.completion.chunk");
    const Json& delta = event["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(content, message["content"].get<std::string>());

  // The routes around: models, tokenize round trip, tokenizer_info, health, version.
  const Reply models = Request(http(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.json["data"][0]["id"], whole.json["model"]);
  const Reply tokens =
      Post(http(), "/tokenize", {{"prompt", "Once upon"}, {"add_special_tokens", false}});
  const Reply back = Post(http(), "/detokenize", {{"tokens", tokens.json["tokens"]}});
  EXPECT_EQ(back.json["prompt"], "Once upon");
  const Reply info = Request(http(), "GET", "/tokenizer_info");
  EXPECT_EQ(info.json["eos_token"], "</s>");
  EXPECT_THAT(info.json["chat_template"].get<std::string>(), HasSubstr("Assistant:"));
  EXPECT_EQ(Request(http(), "GET", "/health").status, 200);
  EXPECT_EQ(Request(http(), "GET", "/version").status, 200);
}

// Sessions through the HTTP API: save_session_as keeps the final state, session_id goes on from
// it (an empty prompt is allowed), exactly as the gRPC API goes on from the same session.
TEST_F(OpenAiServerTest, SessionsSaveAndGoOnAsGrpcDoes) {
  StartServer(HttpOptions(ModelWithTokenizer()));
  const Reply saved = Post(http(), "/v1/completions",
                           {{"prompt", "Once upon a time"},
                            {"max_tokens", 4},
                            {"temperature", 0},
                            {"ignore_eos", true},
                            {"save_session_as", "story"}});
  ASSERT_EQ(saved.status, 200) << saved.body;
  EXPECT_EQ(saved.json["choices"][0]["saved_revision"], 1);
  // A save conditioned on another revision is refused (409), as over gRPC.
  const Reply conflict = Post(
      http(), "/v1/completions",
      {{"prompt", "x"}, {"max_tokens", 1}, {"save_session_as", "story"}, {"save_if_revision", 7}});
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(Post(http(), "/v1/completions", {{"prompt", "x"}, {"save_overwrite", true}}).status,
            400);
  const Reply resumed = Post(http(), "/v1/completions",
                             {{"prompt", ""},
                              {"max_tokens", 6},
                              {"temperature", 0},
                              {"ignore_eos", true},
                              {"session_id", "story"}});
  ASSERT_EQ(resumed.status, 200) << resumed.body;
  v1::GenerateRequest request;
  request.set_session_id("story");
  request.set_max_new_tokens(6);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_ignore_eos(true);
  const Client::Stream grpc = client_->Generate(request);
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  EXPECT_EQ(resumed.json["choices"][0]["text"], grpc.text);
  EXPECT_EQ(resumed.json["choices"][0]["resumed_revision"], 1);
  EXPECT_EQ(resumed.json["usage"]["completion_tokens"], 6);
  const Reply missing =
      Post(http(), "/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}, {"session_id", "nope"}});
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.json["error"]["param"], "session_id");
  const Reply two = Post(http(), "/v1/completions",
                         {{"prompt", {"a", "b"}}, {"max_tokens", 2}, {"session_id", "story"}});
  EXPECT_EQ(two.status, 400) << two.body;
  EXPECT_EQ(two.json["error"]["param"], "session_id");
}

// Errors as OpenAI clients read them: the status, the type, the field as param.
TEST_F(OpenAiServerTest, ErrorsNameTheFieldInOpenAisShape) {
  ServerOptions options = HttpOptions(testing::TestDataDir() / "tiny-a");
  options.max_receive_message_bytes = 4096;
  StartServer(options);
  auto expect_error = [&](const Reply& reply, int status, const std::string& type,
                          const Json& param, const std::string& message) {
    EXPECT_EQ(reply.status, status) << reply.body;
    const Json& error = reply.json["error"];
    EXPECT_EQ(error["type"], type) << reply.body;
    EXPECT_EQ(error["param"], param) << reply.body;
    EXPECT_THAT(error["message"].get<std::string>(), HasSubstr(message));
  };
  expect_error(Request(http(), "POST", "/v1/completions", "{not json"), 400,
               "invalid_request_error", "body", "not valid JSON");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"n", 0}}), 400,
               "invalid_request_error", "n", "at least 1");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"n", 99}}), 400,
               "invalid_request_error", "n", "--max-n");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"temperature", -1}}), 400,
               "invalid_request_error", "temperature", ">= 0");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 99999}}}), 400,
               "invalid_request_error", "prompt[1]", "outside the vocabulary");
  expect_error(Post(http(), "/v1/completions", {{"prompt", "text"}}), 400, "invalid_request_error",
               "prompt", "no tokenizer");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 0}}), 400,
               "invalid_request_error", "max_tokens", "only with echo");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 200000}}), 400,
               "invalid_request_error", "max_tokens", "--max-new-tokens");
  expect_error(Request(http(), "POST", "/v1/chat/completions",
                       R"({"messages": [{"role": "user", "content": "hi", "x": )" +
                           std::string(1000, '[') + std::string(1000, ']') + "}]}"),
               400, "invalid_request_error", "body", "nested deeper than 64");
  expect_error(
      Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"stop_token_ids", {4294967297LL}}}),
      400, "invalid_request_error", "stop_token_ids[0]", "must be in [0, 512)");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"suffix", "x"}}), 400,
               "invalid_request_error", "suffix", "not supported");
  expect_error(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"logit_bias", {{"x", 1}}}}),
               400, "invalid_request_error", "logit_bias[\"x\"]", "token id");
  expect_error(
      Post(http(), "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}),
      400, "invalid_request_error", "messages", "no tokenizer");
  expect_error(Post(http(), "/v1/chat/completions",
                    {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                     {"tools", {{{"type", "function"}}}}}),
               400, "invalid_request_error", "tools", "tool calling");
  const Reply model = Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"model", "gpt-4"}});
  expect_error(model, 404, "not_found_error", "model", "not served here");
  EXPECT_EQ(model.json["error"]["code"], "model_not_found");
  expect_error(Request(http(), "GET", "/v1/nothing"), 404, "not_found_error", nullptr, "no route");
  const Reply method = Request(http(), "GET", "/v1/completions");
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(method.headers.at("allow"), "POST");
  const Reply large = Post(http(), "/v1/completions",
                           {{"prompt", std::vector<int32_t>(3000, 1)}, {"max_tokens", 1}});
  expect_error(large, 413, "invalid_request_error", nullptr, "--max-message-bytes");
  EXPECT_EQ(large.json["error"]["code"], "request_too_large");
  // The server is fine after all that.
  EXPECT_EQ(Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}}).status, 200);
}

// API keys: none or a wrong one is 401 (the SDKs' AuthenticationError); a tenant at its limit of
// concurrent requests is 429; /health needs no key.
TEST_F(OpenAiServerTest, ApiKeysAndTenantLimits) {
  const std::filesystem::path keys = testing::MakeTempDir() / "keys.json";
  const KeyHash hash = HashApiKey("acme-key");
  {
    std::ofstream out(keys);
    out << R"({"tenants": {"acme": {"max_concurrent_requests": 1}}, "keys": [{"sha256": ")"
        << absl::BytesToHexString(
               absl::string_view(reinterpret_cast<const char*>(hash.data()), hash.size()))
        << R"(", "tenant": "acme"}]})";
  }
  ServerOptions options = HttpOptions(testing::TestDataDir() / "tiny-a");
  options.api_keys_file = keys.string();
  StartServer(options);
  const Json request = {{"prompt", {1, 2, 3}}, {"max_tokens", 2}};
  const Reply missing = Post(http(), "/v1/completions", request);
  EXPECT_EQ(missing.status, 401) << missing.body;
  EXPECT_EQ(missing.json["error"]["type"], "authentication_error");
  EXPECT_EQ(missing.json["error"]["code"], "invalid_api_key");
  EXPECT_EQ(Post(http(), "/v1/completions", request, {{"Authorization", "Bearer wrong"}}).status,
            401);
  EXPECT_EQ(Request(http(), "GET", "/v1/models").status, 401);
  EXPECT_EQ(Request(http(), "GET", "/health").status, 200);
  const Reply ok = Post(http(), "/v1/completions", request, {{"Authorization", "Bearer acme-key"}});
  EXPECT_EQ(ok.status, 200) << ok.body;

  // One long stream holds acme's only slot: the next call is 429 until it ends.
  {
    OpenStream held(
        http(),
        {{"prompt", {1, 2, 3}}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}},
        "Authorization: Bearer acme-key\r\n");
    held.ReadUntil("data: ");
    const Reply limited =
        Post(http(), "/v1/completions", request, {{"Authorization", "Bearer acme-key"}});
    EXPECT_EQ(limited.status, 429) << limited.body;
    EXPECT_EQ(limited.json["error"]["type"], "rate_limit_error");
    EXPECT_THAT(limited.json["error"]["message"].get<std::string>(),
                HasSubstr("max_concurrent_requests"));
    EXPECT_EQ(limited.headers.at("retry-after"), "1");
  }
  std::string scrape = AwaitIdle();
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})"), 0) << scrape;
  for (int i = 0; i < 100; ++i) {
    if (Post(http(), "/v1/completions", request, {{"Authorization", "Bearer acme-key"}}).status ==
        200) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Post(http(), "/v1/completions", request, {{"Authorization", "Bearer acme-key"}}).status,
            200);
}

// A client that disconnects mid-stream cancels its generation: the sequence, its slot and its
// stream are freed, and the call is counted CANCELLED. A reader that stops reading holds back only
// its own stream: another request completes meanwhile.
TEST_F(OpenAiServerTest, DisconnectCancelsAndSlowReaderStallsNobody) {
  StartServer(HttpOptions(testing::TestDataDir() / "tiny-a"));
  const Json endless = {
      {"prompt", {1, 2, 3}}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}};
  {
    OpenStream stream(http(), endless);
    EXPECT_THAT(stream.ReadUntil("data: "), HasSubstr("text/event-stream"));
  }  // closed mid-stream
  std::string scrape = AwaitIdle();
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})"), 0) << scrape;
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_state_slots_used{model_name="tiny-a"})"), 0) << scrape;
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_active_streams{model_name="tiny-a"})"), 0) << scrape;
  for (int i = 0; i < 100; ++i) {  // the call's end is recorded once its scope ends
    if (MetricValue(
            scrape,
            R"(hgrn2_requests_total{code="CANCELLED",model_name="tiny-a",rpc="POST /v1/completions"})") ==
        1) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    scrape = Scrape(server_->metrics_port());
  }
  EXPECT_EQ(
      MetricValue(
          scrape,
          R"(hgrn2_requests_total{code="CANCELLED",model_name="tiny-a",rpc="POST /v1/completions"})"),
      1)
      << scrape;

  // A non-streaming request cancelled by its client's leaving too.
  {
    OpenStream whole(http(), {{"prompt", {1, 2, 3}}, {"max_tokens", 100000}, {"ignore_eos", true}});
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  scrape = AwaitIdle();
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})"), 0) << scrape;

  // The slow reader: its stream runs on (40k tokens) while nobody reads it.
  OpenStream slow(http(), {{"prompt", {1, 2, 3}},
                           {"max_tokens", 40000},
                           {"ignore_eos", true},
                           {"stream", true},
                           {"logprobs", 5}});
  slow.ReadUntil("data: ");
  const absl::Time start = absl::Now();
  const Reply other = Post(http(), "/v1/completions", {{"prompt", {4, 5}}, {"max_tokens", 16}});
  EXPECT_EQ(other.status, 200) << other.body;
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  slow.Close();
  scrape = AwaitIdle();
  EXPECT_EQ(MetricValue(scrape, R"(hgrn2_running_sequences{model_name="tiny-a"})"), 0) << scrape;
}

// A full queue is 429 (the SDKs' RateLimitError); a draining server is 503 on every route,
// /health included.
TEST_F(OpenAiServerTest, QueueFullIs429AndDrainingIs503) {
  ServerOptions options = HttpOptions(testing::TestDataDir() / "tiny-a");
  options.engine.max_running = 1;
  options.engine.max_queued = 1;
  StartServer(options);
  const Json endless = {
      {"prompt", {1, 2, 3}}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}};
  auto running = std::make_unique<OpenStream>(http(), endless);
  running->ReadUntil("data: ");
  auto queued = std::make_unique<OpenStream>(http(), endless);
  for (int i = 0; i < 100 && MetricValue(Scrape(server_->metrics_port()),
                                         R"(hgrn2_queue_depth{model_name="tiny-a"})") < 1;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const Reply full = Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}});
  EXPECT_EQ(full.status, 429) << full.body;
  EXPECT_EQ(full.json["error"]["type"], "rate_limit_error");
  queued.reset();

  std::thread drain([&] { server_->Shutdown(absl::Seconds(10)); });
  Reply health;
  for (int i = 0; i < 200; ++i) {
    health = Request(http(), "GET", "/health");
    if (health.status == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(health.status, 503);
  const Reply refused = Post(http(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}});
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.json["error"]["type"], "service_unavailable_error");
  running.reset();  // the last call ends: the drain completes
  drain.join();
}

}  // namespace
}  // namespace hgrn2::server

// hgrn2-cli: the command-line client of hgrn2-server (the hgrn2.v1 API and grpc.health.v1).
//
//   hgrn2-cli [--addr HOST:PORT] [--timeout S] generate TEXT | --ids 1,2,3 [sampling flags]
//   hgrn2-cli score --context TEXT | --context-ids IDS --continuation TEXT | --continuation-ids IDS
//   hgrn2-cli tokenize TEXT | detokenize 1,2,3 | info | health [--service NAME]
//
// Exit codes: 0 success; 1 a gRPC error (one line "hgrn2-cli: CODE: message"), or a health status
// other than SERVING; 2 bad arguments (one line); 128 + the signal when SIGINT or SIGTERM cancelled
// the call (130 for Ctrl-C).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "hgrn2/v1/sessions.grpc.pb.h"

namespace hgrn2::cli {
namespace {

namespace pb = ::hgrn2::v1;
namespace health = ::grpc::health::v1;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Indexed by the gRPC status code's number, which the protocol fixes.
constexpr const char* kStatusCodeNames[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

struct CommonOptions {
  std::string addr = "localhost:50051";
  double timeout_s = 0;  // 0 = no deadline
  bool tls = false;      // TLS with the system's roots (also implied by the files below)
  std::string tls_ca;    // PEM roots that sign the server's certificate
  std::string tls_cert;  // PEM client certificate chain (mutual TLS), with tls_key
  std::string tls_key;
  std::string tls_server_name;  // the name checked in the server's certificate (default: host)
  std::string api_key;          // sent as "authorization: Bearer <key>"
};

// The contents of a PEM file named by `flag`, or InvalidArgument saying why it cannot be read.
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Plaintext, or TLS when any TLS option is given (the system's roots unless --tls-ca).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const CommonOptions& options) {
  if (!options.tls && options.tls_ca.empty() && options.tls_cert.empty() &&
      options.tls_server_name.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  for (const auto& [path, flag, pem] :
       {std::tuple{options.tls_ca, "--tls-ca", &ssl.pem_root_certs},
        std::tuple{options.tls_cert, "--tls-cert", &ssl.pem_cert_chain},
        std::tuple{options.tls_key, "--tls-key", &ssl.pem_private_key}}) {
    if (path.empty()) continue;
    absl::StatusOr<std::string> text = ReadPem(path, flag);
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
  }
  return grpc::SslCredentials(ssl);
}

// --tls-server-name: the certificate is checked against that name instead of the one in --addr
// (a probe dialling localhost, a server reached through an IP address).
grpc::ChannelArguments ChannelArgumentsFor(const CommonOptions& options) {
  grpc::ChannelArguments arguments;
  if (!options.tls_server_name.empty()) arguments.SetSslTargetNameOverride(options.tls_server_name);
  return arguments;
}

struct GenerateOptions {
  std::optional<std::string> text;
  std::string ids;
  uint32_t max_new_tokens = 0;  // 0 = the server's default
  // Absent optionals are left out of the request, so the server's defaults apply.
  std::optional<float> temperature;
  int32_t top_k = 0;
  std::optional<float> top_p;
  float min_p = 0;
  std::optional<float> repetition_penalty;
  float presence_penalty = 0;
  float frequency_penalty = 0;
  std::string seed;  // parsed as uint64 when given (CLI11 would take "-1" as 2^64 - 1)
  std::vector<std::string> logit_bias;
  std::vector<std::string> stop;
  std::string stop_ids;
  bool ignore_eos = false;
  std::optional<uint32_t> logprobs;  // given: print the logprob lines (0: no alternatives)
  int32_t priority = 0;
  bool no_special_tokens = false;
  std::string request_id;
  std::string session_id;
  std::string save_session_as;
  std::optional<uint64_t> save_if_revision;  // save only if the session is at it (0: is new)
  bool save_overwrite = false;
  uint32_t n = 1;  // samples from one prompt
  bool print_ids = false;
  bool json = false;
};

// Names the session a call is about in the metadata "session-id", for a proxy that sends each
// session to the same replica (consistent hashing on the header, docs/sessions.md).
void AddSessionMetadata(grpc::ClientContext& context, const std::string& session_id) {
  if (!session_id.empty()) context.AddMetadata("session-id", session_id);
}

// One of n samples, gathered until its last message (n > 1 prints them when all are done).
struct Sample {
  std::string text;
  std::vector<int32_t> ids;
  pb::GenerateResponse last;  // finish_reason and usage
};

struct ScoreOptions {
  std::optional<std::string> context;
  std::string context_ids;
  std::optional<std::string> continuation;
  std::string continuation_ids;
  uint32_t top_logprobs = 0;
  bool no_special_tokens = false;
  std::string session_id;
  bool json = false;
};

struct TokenizeOptions {
  std::string text;
  bool no_special_tokens = false;
  bool json = false;
};

struct DetokenizeOptions {
  std::vector<std::string> ids;  // "1,2,3" or "1 2 3"
  bool keep_special_tokens = false;
};

int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "hgrn2-cli: %.*s\n", static_cast<int>(message.size()), message.data());
  return code;
}

void Write(absl::string_view text) { std::fwrite(text.data(), 1, text.size(), stdout); }

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): proto3 strings must
// be UTF-8, and protobuf would refuse to send anything else.
bool IsUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char lead = byte(i);
    size_t length;
    unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const unsigned char next = byte(i + k);
      if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xBF)) return false;
    }
    i += length;
  }
  return true;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", part, "\" is not an integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

// Turns SIGINT and SIGTERM into a cancellation of the call in flight. A signal handler may not
// call into gRPC, so the signals are blocked in every thread (the constructor runs before gRPC
// starts any) and a watcher thread takes them with sigtimedwait. A second signal exits at once.
// Any thread may call Watch() and signal().
class InterruptWatcher {
 public:
  InterruptWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] { Loop(); });
  }
  ~InterruptWatcher() {
    stop_ = true;
    thread_.join();
  }
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  // The call to cancel on a signal (nullptr: none). A signal already taken cancels it at once.
  void Watch(grpc::ClientContext* context) {
    std::lock_guard<std::mutex> lock(mutex_);
    context_ = context;
    if (context_ != nullptr && signal_ != 0) context_->TryCancel();
  }
  // The signal taken, or 0.
  int signal() const { return signal_; }

 private:
  void Loop() {
    const timespec tick = {0, 50'000'000};
    while (!stop_) {
      const int taken = sigtimedwait(&signals_, nullptr, &tick);
      if (taken <= 0) continue;
      if (signal_ != 0) std::_Exit(128 + taken);
      signal_ = taken;
      std::lock_guard<std::mutex> lock(mutex_);
      if (context_ != nullptr) context_->TryCancel();
    }
  }

  sigset_t signals_;
  std::mutex mutex_;
  grpc::ClientContext* context_ = nullptr;  // guarded by mutex_
  std::atomic<int> signal_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One command's connection: the channel, the per-call deadline and the interrupt watcher.
class Connection {
 public:
  Connection(const CommonOptions& options, std::shared_ptr<grpc::ChannelCredentials> credentials,
             InterruptWatcher& watcher)
      : options_(options),
        watcher_(watcher),
        channel_(grpc::CreateCustomChannel(options.addr, std::move(credentials),
                                           ChannelArgumentsFor(options))) {}

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Sets the deadline and the API key, and makes a signal cancel this call until Finish().
  void Start(grpc::ClientContext& context) {
    if (!options_.api_key.empty())
      context.AddMetadata("authorization", "Bearer " + options_.api_key);
    if (options_.timeout_s > 0) {
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(
                               std::chrono::duration<double>(options_.timeout_s)));
    }
    watcher_.Watch(&context);
  }
  void Finish() { watcher_.Watch(nullptr); }

  // A failed call: 128 + the signal that cancelled it, or "CODE: message" and exit code 1.
  int Report(const grpc::Status& status) const {
    if (watcher_.signal() != 0) {
      Fail(0, "cancelled by a signal");
      return 128 + watcher_.signal();
    }
    return Fail(kExitFailure,
                absl::StrCat(CodeName(status.error_code()), ": ", status.error_message()));
  }
  bool interrupted() const { return watcher_.signal() != 0; }
  int InterruptedExitCode() const { return 128 + watcher_.signal(); }

  template <typename Request, typename Response, typename Call>
  grpc::Status Unary(const Request& request, Response* response, Call call) {
    grpc::ClientContext context;
    Start(context);
    grpc::Status status = call(&context, request, response);
    Finish();
    return status;
  }

  static const char* CodeName(grpc::StatusCode code) {
    const int index = static_cast<int>(code);
    return index >= 0 && index < static_cast<int>(std::size(kStatusCodeNames))
               ? kStatusCodeNames[index]
               : "UNKNOWN";
  }

 private:
  const CommonOptions& options_;
  InterruptWatcher& watcher_;
  std::shared_ptr<grpc::Channel> channel_;
};

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;  // the .proto's names, as the flags spell them
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    return "{}";  // only for messages that cannot be JSON (none of ours)
  }
  return json;
}

// "i id logprob id:logprob ..." (the format of hgrn2-run --logprobs).
std::string LogprobLine(size_t index, const pb::TokenLogprob& logprob) {
  std::string line = absl::StrFormat("%d %d %.6f", index, logprob.token_id(), logprob.logprob());
  for (const pb::TopLogprob& top : logprob.top()) {
    absl::StrAppendFormat(&line, " %d:%.6f", top.token_id(), top.logprob());
  }
  return line;
}

// The end of a Generate summary line: the time to the first token (when one came) and the rate.
std::string WithTiming(std::string summary,
                       const std::optional<std::chrono::steady_clock::time_point>& first_token,
                       std::chrono::steady_clock::time_point start, int64_t generated,
                       double seconds) {
  if (first_token) {
    absl::StrAppendFormat(&summary, ", first token %.0f ms",
                          1e3 * std::chrono::duration<double>(*first_token - start).count());
  }
  absl::StrAppendFormat(&summary, ", %.1f tok/s]\n",
                        seconds > 0 ? static_cast<double>(generated) / seconds : 0.0);
  return summary;
}

// The end of a Generate call with n > 1: each sample on its own line ('i<TAB>ids' with
// --print-ids, else 'i<TAB>text' with the text's escapes shown), then a summary on stderr.
int FinishSamples(Connection& connection, const grpc::Status& status,
                  const std::vector<Sample>& samples, const GenerateOptions& options,
                  const std::optional<std::chrono::steady_clock::time_point>& first_token,
                  std::chrono::steady_clock::time_point start, double seconds) {
  int64_t generated = 0;
  std::vector<std::string> finishes;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& sample = samples[i];
    generated += sample.last.usage().generated_tokens();
    finishes.push_back(absl::AsciiStrToLower(pb::FinishReason_Name(sample.last.finish_reason())));
    if (options.json) continue;
    const bool as_ids = options.print_ids || (sample.text.empty() && !sample.ids.empty());
    Write(absl::StrCat(i, "\t",
                       as_ids ? absl::StrJoin(sample.ids, ",") : absl::Utf8SafeCEscape(sample.text),
                       "\n"));
  }
  std::fflush(stdout);
  if (!status.ok()) {
    if (!connection.interrupted()) return connection.Report(status);
    return Fail(connection.InterruptedExitCode(), "cancelled");
  }
  std::string summary = absl::StrCat(
      "[", samples.size(), " samples: ", absl::StrJoin(finishes, " "), "; ",
      samples.front().last.usage().prompt_tokens(), " prompt + ", generated, " generated tokens");
  std::fputs(WithTiming(summary, first_token, start, generated, seconds).c_str(), stderr);
  return 0;
}

int Generate(Connection& connection, const GenerateOptions& options) {
  pb::GenerateRequest request;
  if (options.text) {
    if (!IsUtf8(*options.text)) return Fail(kExitUsage, "generate: TEXT is not valid UTF-8");
    request.set_text(*options.text);
  } else {
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(options.ids, "--ids");
    if (!ids.ok()) return Fail(kExitUsage, ids.status().message());
    if (ids->empty() && options.session_id.empty()) {
      return Fail(kExitUsage, "generate: give the prompt as TEXT or --ids IDS (or --session)");
    }
    // With a session and no prompt, generation goes on from where the session stopped.
    if (!ids->empty()) request.mutable_token_ids()->mutable_ids()->Assign(ids->begin(), ids->end());
  }
  pb::SamplingParams& sampling = *request.mutable_sampling();
  if (options.temperature) sampling.set_temperature(*options.temperature);
  sampling.set_top_k(options.top_k);
  if (options.top_p) sampling.set_top_p(*options.top_p);
  sampling.set_min_p(options.min_p);
  if (options.repetition_penalty) sampling.set_repetition_penalty(*options.repetition_penalty);
  sampling.set_presence_penalty(options.presence_penalty);
  sampling.set_frequency_penalty(options.frequency_penalty);
  if (!options.seed.empty()) {
    uint64_t seed;
    if (!absl::SimpleAtoi(options.seed, &seed)) {
      return Fail(kExitUsage, absl::StrCat("--seed: \"", options.seed, "\" is not in [0, 2^64)"));
    }
    sampling.set_seed(seed);
  }
  for (const std::string& entry : options.logit_bias) {
    const std::vector<absl::string_view> parts = absl::StrSplit(entry, '=');
    int32_t id;
    float value;
    const absl::string_view text =
        parts.size() == 2 ? absl::StripAsciiWhitespace(parts[1]) : absl::string_view();
    const bool is_ban = text == "-inf";
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id) ||
        (!is_ban && !absl::SimpleAtof(text, &value))) {
      return Fail(kExitUsage, absl::StrCat("--logit-bias: \"", entry,
                                           "\" is not ID=VALUE (VALUE may be -inf)"));
    }
    (*sampling.mutable_logit_bias())[id] = is_ban ? -std::numeric_limits<float>::infinity() : value;
  }
  request.set_max_new_tokens(options.max_new_tokens);
  for (const std::string& stop : options.stop) {
    if (!IsUtf8(stop)) return Fail(kExitUsage, "--stop: a stop string is not valid UTF-8");
    request.add_stop(stop);
  }
  absl::StatusOr<std::vector<int32_t>> stop_ids = ParseIds(options.stop_ids, "--stop-ids");
  if (!stop_ids.ok()) return Fail(kExitUsage, stop_ids.status().message());
  request.mutable_stop_token_ids()->Assign(stop_ids->begin(), stop_ids->end());
  request.set_ignore_eos(options.ignore_eos);
  request.set_logprobs(options.logprobs.value_or(0));
  request.set_priority(options.priority);
  if (options.no_special_tokens) request.set_add_special_tokens(false);
  request.set_request_id(options.request_id);
  request.set_session_id(options.session_id);
  request.set_save_session_as(options.save_session_as);
  if (options.save_if_revision) request.set_save_if_revision(*options.save_if_revision);
  request.set_save_overwrite(options.save_overwrite);
  request.set_n(options.n);
  const bool many = options.n > 1;
  std::vector<Sample> samples(options.n);

  auto stub = pb::Inference::NewStub(connection.channel());
  grpc::ClientContext context;
  connection.Start(context);
  AddSessionMetadata(context,
                     options.session_id.empty() ? options.save_session_as : options.session_id);
  const auto start = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> first_token;
  std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader =
      stub->Generate(&context, request);
  pb::GenerateResponse response;
  pb::GenerateResponse last;  // the message with finish_reason and usage
  std::vector<int32_t> ids;
  std::vector<pb::TokenLogprob> logprobs;
  bool any_text = false;
  bool write_failed = false;
  while (reader->Read(&response)) {
    if (!first_token && response.token_ids_size() > 0) {
      first_token = std::chrono::steady_clock::now();
    }
    if (many) {
      if (options.json) Write(ToJson(response) + "\n");
      if (response.index() >= samples.size()) continue;  // the server checks n; never here
      Sample& sample = samples[response.index()];
      sample.text += response.text();
      sample.ids.insert(sample.ids.end(), response.token_ids().begin(), response.token_ids().end());
      if (response.finish_reason() != pb::FINISH_REASON_UNSPECIFIED || response.has_usage()) {
        sample.last = response;
      }
    } else if (options.json) {
      Write(ToJson(response));
      Write("\n");
    } else if (options.print_ids) {
      Write(absl::StrCat(ids.empty() || response.token_ids().empty() ? "" : ",",
                         absl::StrJoin(response.token_ids(), ",")));
    } else {
      Write(response.text());
    }
    any_text = any_text || !response.text().empty();
    ids.insert(ids.end(), response.token_ids().begin(), response.token_ids().end());
    for (const pb::TokenLogprob& logprob : response.logprobs()) logprobs.push_back(logprob);
    if (response.finish_reason() != pb::FINISH_REASON_UNSPECIFIED || response.has_usage()) {
      last = response;
    }
    if (std::fflush(stdout) != 0) {  // e.g. a closed pipe: stop generating for nobody
      write_failed = true;
      context.TryCancel();
    }
  }
  const grpc::Status status = reader->Finish();
  connection.Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (write_failed) return Fail(kExitFailure, "writing to standard output failed");
  if (many) return FinishSamples(connection, status, samples, options, first_token, start, seconds);

  if (!options.json) {
    // A model without a tokenizer sends no text: its ids are the output.
    if (!options.print_ids && !any_text && !ids.empty()) Write(absl::StrJoin(ids, ","));
    if (!ids.empty() || any_text) Write("\n");
    // The server sends each token's logprob; they are printed when asked for.
    if (options.logprobs) {
      for (size_t i = 0; i < logprobs.size(); ++i) Write(LogprobLine(i, logprobs[i]) + "\n");
    }
    std::fflush(stdout);
  }
  if (!status.ok()) {
    if (!connection.interrupted()) return connection.Report(status);
    return Fail(connection.InterruptedExitCode(),
                absl::StrCat("cancelled after ", ids.size(), " generated tokens"));
  }

  std::string finish = absl::AsciiStrToLower(pb::FinishReason_Name(last.finish_reason()));
  if (!last.stop_string().empty()) {
    absl::StrAppend(&finish, " \"", absl::Utf8SafeCEscape(last.stop_string()), "\"");
  }
  const pb::Usage& usage = last.usage();
  std::string summary = absl::StrCat("[finish: ", finish, ", ", usage.prompt_tokens(), " prompt");
  if (usage.cached_prompt_tokens() > 0) {
    absl::StrAppend(&summary, " (", usage.cached_prompt_tokens(), " cached)");
  }
  absl::StrAppend(&summary, " + ", usage.generated_tokens(), " generated tokens");
  if (last.saved_revision() > 0) {
    absl::StrAppend(&summary, ", saved ", options.save_session_as, " revision ",
                    last.saved_revision());
  }
  std::fputs(WithTiming(summary, first_token, start, usage.generated_tokens(), seconds).c_str(),
             stderr);
  return 0;
}

// Sets a oneof side of a ScoreRequest from TEXT or IDS; false (with the message printed) when
// the ids do not parse.
template <typename SetText, typename SetIds>
bool SetScoreSide(const std::optional<std::string>& text, const std::string& ids_flag_value,
                  absl::string_view flag, SetText set_text, SetIds set_ids) {
  if (text) {
    if (!IsUtf8(*text)) {
      Fail(kExitUsage, absl::StrCat(absl::StripSuffix(flag, "-ids"), ": not valid UTF-8"));
      return false;
    }
    set_text(*text);
    return true;
  }
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(ids_flag_value, flag);
  if (!ids.ok()) {
    Fail(kExitUsage, ids.status().message());
    return false;
  }
  if (!ids->empty()) set_ids(*ids);
  return true;
}

int Score(Connection& connection, const ScoreOptions& options) {
  pb::ScoreRequest request;
  const bool context_ok = SetScoreSide(
      options.context, options.context_ids, "--context-ids",
      [&](const std::string& text) { request.set_context_text(text); },
      [&](const std::vector<int32_t>& ids) {
        request.mutable_context_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
      });
  if (!context_ok) return kExitUsage;
  const bool continuation_ok = SetScoreSide(
      options.continuation, options.continuation_ids, "--continuation-ids",
      [&](const std::string& text) { request.set_continuation_text(text); },
      [&](const std::vector<int32_t>& ids) {
        request.mutable_continuation_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
      });
  if (!continuation_ok) return kExitUsage;
  if (request.continuation_case() == pb::ScoreRequest::CONTINUATION_NOT_SET) {
    return Fail(kExitUsage, "score: give --continuation TEXT or --continuation-ids IDS");
  }
  request.set_top_logprobs(options.top_logprobs);
  if (options.no_special_tokens) request.set_add_special_tokens(false);
  request.set_session_id(options.session_id);

  auto stub = pb::Inference::NewStub(connection.channel());
  pb::ScoreResponse response;
  const grpc::Status status = connection.Unary(
      request, &response, [&](grpc::ClientContext* context, const auto& in, auto* out) {
        AddSessionMetadata(*context, options.session_id);
        return stub->Score(context, in, out);
      });
  if (!status.ok()) return connection.Report(status);
  if (options.json) {
    Write(ToJson(response) + "\n");
    return 0;
  }
  // "i id logprob [id:logprob ...]" per scored token, i its position in the continuation (the
  // unscored leading tokens are not in the response: without context, scoring starts at 1).
  for (int i = 0; i < response.token_ids_size(); ++i) {
    pb::TokenLogprob line;
    line.set_token_id(response.token_ids(i));
    line.set_logprob(i < response.token_logprobs_size() ? response.token_logprobs(i) : 0.0f);
    if (i < response.top_logprobs_size()) *line.mutable_top() = response.top_logprobs(i).top();
    Write(LogprobLine(response.unscored_tokens() + i, line) + "\n");
  }
  Write(absl::StrFormat("total %.6f greedy %s\n", response.total_logprob(),
                        response.is_greedy() ? "yes" : "no"));
  return 0;
}

int Tokenize(Connection& connection, const TokenizeOptions& options) {
  pb::TokenizeRequest request;
  if (!IsUtf8(options.text)) return Fail(kExitUsage, "tokenize: TEXT is not valid UTF-8");
  request.set_text(options.text);
  if (options.no_special_tokens) request.set_add_special_tokens(false);
  auto stub = pb::Inference::NewStub(connection.channel());
  pb::TokenizeResponse response;
  const grpc::Status status = connection.Unary(
      request, &response, [&](grpc::ClientContext* context, const auto& in, auto* out) {
        return stub->Tokenize(context, in, out);
      });
  if (!status.ok()) return connection.Report(status);
  if (options.json) {
    Write(ToJson(response) + "\n");
    return 0;
  }
  // The ids on one line (ready for --ids), then "id "piece"" per token.
  Write(absl::StrCat(absl::StrJoin(response.token_ids(), ","), "\n"));
  for (int i = 0; i < response.token_ids_size(); ++i) {
    const std::string piece = i < response.pieces_size() ? response.pieces(i) : "";
    Write(absl::StrCat(response.token_ids(i), " \"", absl::Utf8SafeCEscape(piece), "\"\n"));
  }
  return 0;
}

int Detokenize(Connection& connection, const DetokenizeOptions& options) {
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(absl::StrJoin(options.ids, ","), "IDS");
  if (!ids.ok()) return Fail(kExitUsage, ids.status().message());
  pb::DetokenizeRequest request;
  request.mutable_token_ids()->Assign(ids->begin(), ids->end());
  if (options.keep_special_tokens) request.set_skip_special_tokens(false);
  auto stub = pb::Inference::NewStub(connection.channel());
  pb::DetokenizeResponse response;
  const grpc::Status status = connection.Unary(
      request, &response, [&](grpc::ClientContext* context, const auto& in, auto* out) {
        return stub->Detokenize(context, in, out);
      });
  if (!status.ok()) return connection.Report(status);
  Write(response.text() + "\n");
  return 0;
}

std::string Bytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 20)) return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  if (bytes >= (uint64_t{1} << 10)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  return absl::StrCat(bytes, " bytes");
}

std::string Count(uint64_t n) {
  if (n >= 1'000'000'000) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1'000'000) return absl::StrFormat("%.2fM", n / 1e6);
  if (n >= 1'000) return absl::StrFormat("%.1fk", n / 1e3);
  return absl::StrCat(n);
}

int Info(Connection& connection, bool json) {
  auto stub = pb::Inference::NewStub(connection.channel());
  pb::ModelInfo info;
  const grpc::Status status =
      connection.Unary(pb::GetModelInfoRequest(), &info,
                       [&](grpc::ClientContext* context, const auto& in, auto* out) {
                         return stub->GetModelInfo(context, in, out);
                       });
  if (!status.ok()) return connection.Report(status);
  if (json) {
    Write(ToJson(info) + "\n");
    return 0;
  }
  const pb::Limits& limits = info.limits();
  std::string special = info.has_bos_token_id() ? absl::StrCat("bos ", info.bos_token_id()) : "";
  if (info.eos_token_ids_size() > 0) {
    absl::StrAppend(&special, special.empty() ? "" : ", ", "eos ",
                    absl::StrJoin(info.eos_token_ids(), " "));
  }
  Write(absl::StrFormat(
      "model        %s at %s\n"
      "parameters   %s (vocab %d, hidden %d, %d layers, %d heads, key dim %d, value dim %d)\n"
      "tokenizer    %s\n"
      "special ids  %s\n"
      "backend      %s, %s weights, %s states of %s per sequence\n"
      "limits       prompt %d tokens, new %d tokens (default %d), %d stop strings of %d bytes, "
      "%d logprobs, %d running, %d queued\n"
      "server       %s\n",
      info.model_type(), info.model_path(), Count(info.num_parameters()), info.vocab_size(),
      info.hidden_size(), info.num_layers(), info.num_heads(), info.head_key_dim(),
      info.head_value_dim(), info.tokenizer().empty() ? "none (token ids only)" : info.tokenizer(),
      special.empty() ? "none" : special, info.backend(), info.dtype(), info.state_dtype(),
      Bytes(info.state_bytes_per_sequence()), limits.max_prompt_tokens(), limits.max_new_tokens(),
      limits.default_max_new_tokens(), limits.max_stop_strings(), limits.max_stop_string_bytes(),
      limits.max_logprobs(), limits.max_running(), limits.max_queued(),
      absl::StrCat("hgrn2-server ", info.server_version())));
  return 0;
}

int Health(Connection& connection, const std::string& service) {
  auto stub = health::Health::NewStub(connection.channel());
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  const grpc::Status status = connection.Unary(
      request, &response, [&](grpc::ClientContext* context, const auto& in, auto* out) {
        return stub->Check(context, in, out);
      });
  if (!status.ok()) return connection.Report(status);
  Write(health::HealthCheckResponse::ServingStatus_Name(response.status()) + "\n");
  return response.status() == health::HealthCheckResponse::SERVING ? 0 : kExitFailure;
}

// The services the server lists through gRPC server reflection, one per line.
int Services(Connection& connection) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(connection.channel());
  grpc::ClientContext context;
  connection.Start(context);
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("*");
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  const bool exchanged = stream->Write(request) && stream->WritesDone() && stream->Read(&response);
  while (stream->Read(&response)) {
  }
  const grpc::Status status = stream->Finish();
  connection.Finish();
  if (!status.ok()) return connection.Report(status);
  if (!exchanged || !response.has_list_services_response()) {
    std::fprintf(stderr, "hgrn2-cli: the server answered no service list\n");
    return kExitFailure;
  }
  for (const auto& service : response.list_services_response().service()) {
    Write(service.name() + "\n");
  }
  return 0;
}

// What `hgrn2-cli session ...` was asked.
struct SessionOptions {
  std::string id;
  std::string file;  // export: where to write ("-" = stdout); import: what to read
  std::optional<uint64_t> if_revision;  // import: only if the session is at it (0: is new)
  bool json = false;
};

std::string SessionLine(const pb::SessionInfo& info) {
  std::string saved = "-";
  if (info.saved_at_unix_ms() > 0) {
    saved = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(info.saved_at_unix_ms()),
                             absl::UTCTimeZone());
  }
  return absl::StrCat(info.session_id(), "\t", info.num_tokens(), " tokens\t",
                      Bytes(info.size_bytes()), "\tsaved ", saved, "\trevision ", info.revision(),
                      info.expires_at_unix_ms() > 0 ? "\texpires" : "", "\n");
}

int SessionExport(Connection& connection, const SessionOptions& options) {
  auto stub = pb::Sessions::NewStub(connection.channel());
  pb::ExportSessionRequest request;
  request.set_session_id(options.id);
  grpc::ClientContext context;
  connection.Start(context);
  AddSessionMetadata(context, options.id);
  auto reader = stub->ExportSession(&context, request);
  std::string data;
  pb::SessionChunk chunk;
  while (reader->Read(&chunk)) data += chunk.data();
  const grpc::Status status = reader->Finish();
  connection.Finish();
  if (!status.ok()) return connection.Report(status);
  if (options.file == "-") {
    std::fwrite(data.data(), 1, data.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : Fail(kExitFailure, "writing to standard output failed");
  }
  std::ofstream out(options.file, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return Fail(kExitFailure, absl::StrCat("cannot write ", options.file));
  std::fprintf(stderr, "exported %s: %s to %s\n", options.id.c_str(), Bytes(data.size()).c_str(),
               options.file.c_str());
  return 0;
}

int SessionImport(Connection& connection, const SessionOptions& options) {
  std::ifstream in(options.file, std::ios::binary);
  if (!in) return Fail(kExitUsage, absl::StrCat("cannot read ", options.file));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto stub = pb::Sessions::NewStub(connection.channel());
  grpc::ClientContext context;
  connection.Start(context);
  AddSessionMetadata(context, options.id);
  pb::SessionInfo info;
  auto writer = stub->ImportSession(&context, &info);
  constexpr size_t kChunk = 1 << 20;
  size_t offset = 0;
  do {
    pb::SessionChunk chunk;
    if (offset == 0) chunk.set_session_id(options.id);
    if (offset == 0 && options.if_revision) chunk.set_if_revision(*options.if_revision);
    const size_t n = std::min(kChunk, data.size() - offset);
    chunk.set_data(data.data() + offset, n);
    offset += n;
    if (!writer->Write(chunk)) break;  // the server answered early: Finish says why
  } while (offset < data.size());
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  connection.Finish();
  if (!status.ok()) return connection.Report(status);
  Write(options.json ? ToJson(info) + "\n" : SessionLine(info));
  return 0;
}

int SessionInfoCommand(Connection& connection, const SessionOptions& options) {
  auto stub = pb::Sessions::NewStub(connection.channel());
  pb::GetSessionRequest request;
  request.set_session_id(options.id);
  pb::SessionInfo info;
  const grpc::Status status = connection.Unary(
      request, &info, [&](grpc::ClientContext* context, const auto& r, auto* response) {
        AddSessionMetadata(*context, options.id);
        return stub->GetSession(context, r, response);
      });
  if (!status.ok()) return connection.Report(status);
  Write(options.json ? ToJson(info) + "\n" : SessionLine(info));
  return 0;
}

// Every session, asked for a page at a time (JSON: one response holding them all).
int SessionList(Connection& connection, bool json) {
  auto stub = pb::Sessions::NewStub(connection.channel());
  pb::ListSessionsResponse response;
  pb::ListSessionsRequest request;
  request.set_page_size(1000);
  do {
    pb::ListSessionsResponse page;
    const grpc::Status status = connection.Unary(
        request, &page, [&](grpc::ClientContext* context, const auto& r, auto* out) {
          return stub->ListSessions(context, r, out);
        });
    if (!status.ok()) return connection.Report(status);
    for (pb::SessionInfo& info : *page.mutable_sessions()) {
      *response.add_sessions() = std::move(info);
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    Write(ToJson(response) + "\n");
  } else {
    for (const pb::SessionInfo& info : response.sessions()) Write(SessionLine(info));
  }
  return 0;
}

int SessionDelete(Connection& connection, const SessionOptions& options) {
  auto stub = pb::Sessions::NewStub(connection.channel());
  pb::DeleteSessionRequest request;
  request.set_session_id(options.id);
  pb::DeleteSessionResponse response;
  const grpc::Status status = connection.Unary(
      request, &response, [&](grpc::ClientContext* context, const auto& r, auto* out) {
        AddSessionMetadata(*context, options.id);
        return stub->DeleteSession(context, r, out);
      });
  if (!status.ok()) return connection.Report(status);
  return 0;
}

}  // namespace
}  // namespace hgrn2::cli

int main(int argc, char** argv) {
  using namespace hgrn2::cli;  // NOLINT(google-build-using-namespace): main only
  CommonOptions common;
  GenerateOptions gen;
  ScoreOptions score;
  TokenizeOptions tokenize;
  DetokenizeOptions detokenize;
  bool info_json = false;
  std::string health_service;
  SessionOptions session;

  CLI::App app{"hgrn2-cli: a command-line client of hgrn2-server"};
  app.require_subcommand(1);
  app.fallthrough();  // --addr and --timeout also after the subcommand
  app.add_option("--addr", common.addr, "the server, HOST:PORT")
      ->envname("HGRN2_ADDR")
      ->capture_default_str();
  app.add_option("--timeout", common.timeout_s, "deadline of each call in seconds (0 = none)")
      ->capture_default_str();
  app.add_flag("--tls", common.tls, "use TLS, trusting the system's root certificates");
  app.add_option("--tls-ca", common.tls_ca,
                 "use TLS, trusting the CA certificates in this PEM file");
  CLI::Option* tls_cert =
      app.add_option("--tls-cert", common.tls_cert,
                     "client certificate chain (PEM) for mutual TLS; with --tls-key");
  CLI::Option* tls_key =
      app.add_option("--tls-key", common.tls_key, "private key (PEM) of --tls-cert");
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  app.add_option("--tls-server-name", common.tls_server_name,
                 "use TLS and check the server's certificate for this name instead of --addr's "
                 "host");
  app.add_option("--api-key", common.api_key,
                 "sent with every call as \"authorization: Bearer <key>\"")
      ->envname("HGRN2_API_KEY");

  CLI::App* generate_cmd =
      app.add_subcommand("generate", "generate after a prompt, streaming the text to stdout");
  CLI::Option* text = generate_cmd->add_option("text", gen.text, "the prompt text");
  generate_cmd->add_option("--ids", gen.ids, "the prompt as token ids, comma-separated")
      ->excludes(text);
  generate_cmd->add_option("--max-new-tokens", gen.max_new_tokens,
                           "at most this many tokens (0 = the server's default)");
  generate_cmd->add_option("--temperature", gen.temperature, "0 = greedy (server default 1)");
  generate_cmd->add_option("--top-k", gen.top_k, "0 = off");
  generate_cmd->add_option("--top-p", gen.top_p, "nucleus mass in (0, 1]");
  generate_cmd->add_option("--min-p", gen.min_p, "in [0, 1]; 0 = off");
  generate_cmd->add_option("--repetition-penalty", gen.repetition_penalty, "> 0; 1 = off");
  generate_cmd->add_option("--presence-penalty", gen.presence_penalty, "in [-2, 2]");
  generate_cmd->add_option("--frequency-penalty", gen.frequency_penalty, "in [-2, 2]");
  generate_cmd->add_option("--seed", gen.seed, "in [0, 2^64): same seed, same output");
  // One value per occurrence, so that "--stop . TEXT" leaves TEXT to the prompt.
  generate_cmd
      ->add_option("--logit-bias", gen.logit_bias,
                   "ID=VALUE added to a logit, -inf bans (repeatable)")
      ->allow_extra_args(false);
  generate_cmd->add_option("--stop", gen.stop, "a stop string (repeatable)")
      ->allow_extra_args(false);
  generate_cmd->add_option("--stop-ids", gen.stop_ids, "token ids that end generation, a,b,c");
  generate_cmd->add_flag("--ignore-eos", gen.ignore_eos, "do not stop at the model's EOS token");
  generate_cmd->add_option(
      "--logprobs", gen.logprobs,
      "after the output, print each token's logprob and N alternatives (0: none)");
  generate_cmd->add_option("--priority", gen.priority, "higher runs first when the server is busy");
  generate_cmd->add_flag("--no-special-tokens", gen.no_special_tokens,
                         "text prompts: do not add the tokenizer's special tokens (BOS)");
  generate_cmd->add_option("--request-id", gen.request_id, "shown in the server's logs");
  generate_cmd->add_option("--session", gen.session_id, "start from this saved session");
  generate_cmd
      ->add_option("--n", gen.n,
                   "samples from one prompt (one prefill); n > 1 prints 'i<TAB>text' per "
                   "sample when all are done; with --seed, sample i uses seed + i")
      ->check(CLI::Range(1u, 1024u));
  generate_cmd->add_option("--save-session", gen.save_session_as,
                           "save the final state under this session id (its next revision; "
                           "saving the --session resumed, only if no other request saved it "
                           "since: else ABORTED)");
  CLI::Option* if_revision = generate_cmd->add_option(
      "--save-if-revision", gen.save_if_revision,
      "with --save-session: save only if the session is at this revision now (0: only if there "
      "is none)");
  generate_cmd
      ->add_flag("--save-overwrite", gen.save_overwrite,
                 "with --save-session: save even if another request saved the session since "
                 "this one resumed it")
      ->excludes(if_revision);
  CLI::Option* print_ids = generate_cmd->add_flag(
      "--print-ids", gen.print_ids, "print the generated ids comma-separated instead of text");
  generate_cmd->add_flag("--json", gen.json, "print each response message as JSON, one per line")
      ->excludes(print_ids);

  CLI::App* score_cmd =
      app.add_subcommand("score", "log-probabilities of a continuation given a context");
  CLI::Option* context = score_cmd->add_option("--context", score.context, "context text");
  score_cmd->add_option("--context-ids", score.context_ids, "context token ids, a,b,c")
      ->excludes(context);
  CLI::Option* continuation =
      score_cmd->add_option("--continuation", score.continuation, "continuation text");
  score_cmd
      ->add_option("--continuation-ids", score.continuation_ids, "continuation token ids, a,b,c")
      ->excludes(continuation);
  score_cmd->add_option("--top-logprobs", score.top_logprobs,
                        "also print N most probable alternatives at each position");
  score_cmd->add_flag("--no-special-tokens", score.no_special_tokens,
                      "context text: do not add the tokenizer's special tokens (BOS)");
  score_cmd->add_option("--session", score.session_id, "condition on this saved session");
  score_cmd->add_flag("--json", score.json, "print the response as JSON");

  CLI::App* tokenize_cmd = app.add_subcommand("tokenize", "text to token ids and pieces");
  tokenize_cmd->add_option("text", tokenize.text, "the text")->required();
  tokenize_cmd->add_flag("--no-special-tokens", tokenize.no_special_tokens,
                         "do not add the tokenizer's special tokens (BOS)");
  tokenize_cmd->add_flag("--json", tokenize.json, "print the response as JSON");

  CLI::App* detokenize_cmd = app.add_subcommand("detokenize", "token ids to text");
  detokenize_cmd->add_option("ids", detokenize.ids, "token ids, a,b,c (or a b c)")->required();
  detokenize_cmd->add_flag("--keep-special-tokens", detokenize.keep_special_tokens,
                           "keep special tokens in the text");

  CLI::App* info_cmd = app.add_subcommand("info", "what the server runs: model, backend, limits");
  info_cmd->add_flag("--json", info_json, "print the response as JSON");

  CLI::App* health_cmd =
      app.add_subcommand("health", "grpc.health.v1 Check; exit code 0 only when SERVING");
  health_cmd->add_option("--service", health_service, "the service to check (\"\": the server)");

  CLI::App* services_cmd =
      app.add_subcommand("services", "the services the server offers (gRPC server reflection)");

  CLI::App* session_cmd = app.add_subcommand("session", "saved sessions on the server");
  session_cmd->require_subcommand(1);
  CLI::App* export_cmd =
      session_cmd->add_subcommand("export", "write a session's snapshot to a file");
  export_cmd->add_option("id", session.id, "the session")->required();
  export_cmd->add_option("file", session.file, "where to write it (- = standard output)")
      ->required();
  CLI::App* import_cmd =
      session_cmd->add_subcommand("import", "store a snapshot file as a session");
  import_cmd->add_option("id", session.id, "the session to store it as")->required();
  import_cmd->add_option("file", session.file, "the snapshot file")->required();
  import_cmd->add_option("--if-revision", session.if_revision,
                         "store only if the session is at this revision now (0: only if there is "
                         "none)");
  import_cmd->add_flag("--json", session.json, "print the stored session as JSON");
  CLI::App* session_info_cmd = session_cmd->add_subcommand("info", "one session's facts");
  session_info_cmd->add_option("id", session.id, "the session")->required();
  session_info_cmd->add_flag("--json", session.json, "print the response as JSON");
  CLI::App* list_cmd = session_cmd->add_subcommand("list", "the sessions, by id");
  list_cmd->add_flag("--json", session.json, "print the response as JSON");
  CLI::App* delete_cmd = session_cmd->add_subcommand("delete", "delete a session");
  delete_cmd->add_option("id", session.id, "the session")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-cli: %s (see --help)\n", e.what());
    return kExitUsage;
  }

  if (!(common.timeout_s >= 0)) {
    std::fprintf(stderr, "hgrn2-cli: --timeout: %g is not a number of seconds >= 0\n",
                 common.timeout_s);
    return kExitUsage;
  }
  InterruptWatcher watcher;  // before the credentials and the channel start gRPC's threads
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFor(common);
  if (!credentials.ok()) {
    std::fprintf(stderr, "hgrn2-cli: %s\n", std::string(credentials.status().message()).c_str());
    return kExitUsage;
  }
  Connection connection(common, *std::move(credentials), watcher);
  if (generate_cmd->parsed()) return Generate(connection, gen);
  if (score_cmd->parsed()) return Score(connection, score);
  if (tokenize_cmd->parsed()) return Tokenize(connection, tokenize);
  if (detokenize_cmd->parsed()) return Detokenize(connection, detokenize);
  if (info_cmd->parsed()) return Info(connection, info_json);
  if (services_cmd->parsed()) return Services(connection);
  if (export_cmd->parsed()) return SessionExport(connection, session);
  if (import_cmd->parsed()) return SessionImport(connection, session);
  if (session_info_cmd->parsed()) return SessionInfoCommand(connection, session);
  if (list_cmd->parsed()) return SessionList(connection, session.json);
  if (delete_cmd->parsed()) return SessionDelete(connection, session);
  return Health(connection, health_service);
}

// hgrn2-loadgen: drives hgrn2-server with streaming Generate calls (or, with --protocol openai,
// streaming POST /v1/completions on its OpenAI-compatible HTTP API) and reports its throughput
// and latencies (gRPC's callback API, or Beast's asynchronous I/O: no thread per stream, so the
// client keeps up with the server).
//
//   hgrn2-loadgen --addr HOST:PORT [--protocol grpc|openai] [--concurrency C | --rate R]
//                 [--requests N | --duration S] [--prompt-tokens A[:B] | --prompt-ids A[:B]]
//                 [--output-tokens A[:B]] [--json F]
//
// Exit codes: 0 the run finished (errors are counted, not fatal); 1 the server could not be asked
// for its model; 2 bad arguments.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "clients/loadgen/call_record.h"
#include "clients/loadgen/openai_load.h"
#include "hgrn2/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace hgrn2::loadgen {
namespace {

namespace pb = ::hgrn2::v1;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Indexed by the gRPC status code's number, which the protocol fixes.
constexpr const char* kStatusCodeNames[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

std::string CodeName(grpc::StatusCode code) {
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kStatusCodeNames)) ? kStatusCodeNames[i]
                                                                     : absl::StrCat("CODE_", i);
}

// The built-in text corpus: the opening of Pride and Prejudice (public domain), the demo model's
// own domain. Prompts are windows of its tokens, wrapping around.
constexpr absl::string_view kCorpus =
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be on "
    "his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters. \"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that "
    "Netherfield Park is let at last?\" Mr. Bennet replied that he had not. \"But it is,\" "
    "returned she; \"for Mrs. Long has just been here, and she told me all about it.\" Mr. Bennet "
    "made no answer. \"Do you not want to know who has taken it?\" cried his wife impatiently. "
    "\"You want to tell me, and I have no objection to hearing it.\" This was invitation enough. "
    "\"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a young man of "
    "large fortune from the north of England; that he came down on Monday in a chaise and four to "
    "see the place, and was so much delighted with it, that he agreed with Mr. Morris "
    "immediately; that he is to take possession before Michaelmas, and some of his servants are to "
    "be in the house by the end of next week.\" \"What is his name?\" \"Bingley.\" \"Is he married "
    "or single?\" \"Oh! Single, my dear, to be sure! A single man of large fortune; four or five "
    "thousand a year. What a fine thing for our girls!\" \"How so? How can it affect them?\" \"My "
    "dear Mr. Bennet,\" replied his wife, \"how can you be so tiresome! You must know that I am "
    "thinking of his marrying one of them.\" \"Is that his design in settling here?\" \"Design! "
    "Nonsense, how can you talk so! But it is very likely that he may fall in love with one of "
    "them, and therefore you must visit him as soon as he comes.\" ";

// A length, fixed ("32") or drawn uniformly from a closed range ("16:64").
struct Range {
  int min = 0;
  int max = 0;
  int Draw(std::mt19937_64& rng) const {
    return min == max ? min : std::uniform_int_distribution<int>(min, max)(rng);
  }
};

absl::StatusOr<Range> ParseRange(absl::string_view text, absl::string_view flag, int lowest) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  Range range;
  if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &range.min) ||
      !absl::SimpleAtoi(parts.back(), &range.max)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": expected N or MIN:MAX, got ", text));
  }
  if (range.min < lowest || range.max < range.min) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": need ", lowest, " <= MIN <= MAX, got ", text));
  }
  return range;
}

struct Options {
  std::string addr = "localhost:50051";
  std::string protocol = "grpc";  // or "openai": the HTTP API, --addr its port
  std::string api_key;
  std::string tls_ca;    // set: TLS, trusting these PEM CA certificates
  std::string tls_cert;  // PEM client certificate chain and key, for mutual TLS
  std::string tls_key;
  int concurrency = 8;
  double rate = 0;
  int requests = 0;
  double duration = 0;
  int warmup = 0;
  // >= 0: the closed loop (or the arrivals) runs without a pause this long before a window of
  // --duration seconds; throughput counts the tokens that arrive inside the window, latencies
  // the calls that start inside it. < 0: --warmup calls finish first, then the measured ones
  // start together (a burst of --concurrency calls).
  double warmup_seconds = -1;
  std::string prompt_tokens = "64";
  std::string prompt_ids;
  std::string output_tokens = "32";
  std::string corpus_file;
  float temperature = 1.0f;
  double timeout = 0;
  // gRPC connections; 0 = one per 64 calls in flight, as a fleet of clients (or a gateway's
  // pool) would have: a server caps the calls of one connection (--max-streams-per-connection).
  int channels = 0;
  uint64_t seed = 1;
  std::string json_path;
  bool quiet = false;
};

// Latency samples in seconds and their summary.
nlohmann::json Summary(std::vector<double> samples) {
  nlohmann::json out = {{"count", samples.size()}};
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  auto quantile = [&](double q) {  // linear between closest ranks
    const double pos = q * static_cast<double>(samples.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, samples.size() - 1);
    return samples[lo] + (samples[hi] - samples[lo]) * (pos - static_cast<double>(lo));
  };
  out["mean"] = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  out["p50"] = quantile(0.50);
  out["p90"] = quantile(0.90);
  out["p99"] = quantile(0.99);
  out["max"] = samples.back();
  return out;
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A prompt of the run: token ids, or text.
struct Prompt {
  std::vector<int32_t> ids;
  std::string text;
};

// Starts call number `call` (its prompt: call % prompts) generating `output_tokens`; `finish`
// takes its record from any thread.
using CallStarter = std::function<void(int call, int output_tokens, CallRecord record,
                                       std::function<void(CallRecord)> finish)>;

// One streaming Generate call; deletes itself when done (after handing its record on).
class GenerateCall : public grpc::ClientReadReactor<pb::GenerateResponse> {
 public:
  GenerateCall(pb::GenerateRequest request, CallRecord record,
               std::function<void(CallRecord)> finish)
      : request_(std::move(request)), record_(std::move(record)), finish_(std::move(finish)) {}
  void Start(pb::Inference::Stub* stub, const Options& options);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  pb::GenerateRequest request_;
  pb::GenerateResponse response_;
  grpc::ClientContext context_;
  CallRecord record_;
  std::function<void(CallRecord)> finish_;
};

// The load: issues calls (fixed concurrency, or Poisson arrivals capped by the concurrency) from
// the main thread; the protocol's threads hand finished records back under the mutex.
class Run {
 public:
  Run(const Options& options, CallStarter start)
      : options_(options), start_(std::move(start)), rng_(options.seed) {}

  // Issues every call and waits for them; returns the report.
  nlohmann::json Execute() {
    const Range output = *ParseRange(options_.output_tokens, "--output-tokens", 1);
    const int max_in_flight = options_.concurrency;
    std::exponential_distribution<double> gap(options_.rate > 0 ? options_.rate : 1.0);
    Clock::time_point next_arrival = Clock::now();
    int issued = 0;
    if (windowed()) {
      const Clock::time_point now = Clock::now();
      next_arrival = now;
      std::lock_guard lock(mutex_);
      measure_start_ = now + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(options_.warmup_seconds));
    }
    std::thread progress([this] { ProgressLoop(); });
    while (true) {
      const bool measuring =
          windowed() ? Clock::now() >= *measure_start_ : issued >= options_.warmup;
      if (measuring && windowed() && cpu_start_ == 0) cpu_start_ = CpuSeconds();
      if (measuring && !measure_start_) {
        std::unique_lock lock(mutex_);
        // Warm-up calls finish first, so that the window holds only measured calls.
        idle_.wait(lock, [&] { return in_flight_ == 0; });
        measure_start_ = Clock::now();
        cpu_start_ = CpuSeconds();
        next_arrival = *measure_start_;
      }
      if (measuring && Done(issued - options_.warmup)) break;
      if (options_.rate > 0 && (measuring || windowed())) {
        next_arrival +=
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng_)));
        std::this_thread::sleep_until(next_arrival);
      }
      {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [&] { return in_flight_ < max_in_flight; });
        ++in_flight_;
      }
      CallRecord record;
      record.measured = measuring;
      start_(issued, output.Draw(rng_), std::move(record),
             [this](CallRecord done) { Finish(std::move(done)); });
      ++issued;
    }
    {
      std::unique_lock lock(mutex_);
      idle_.wait(lock, [&] { return in_flight_ == 0; });
      finished_ = true;
    }
    const Clock::time_point end = Clock::now();
    const double cpu = CpuSeconds() - cpu_start_;
    progress_cv_.notify_all();
    progress.join();
    return Report(end, cpu);
  }

  void Finish(CallRecord record) {
    std::lock_guard lock(mutex_);
    // A window measures the calls that started in it (the loop may wait for a free seat between
    // deciding to issue a call and issuing it).
    if (windowed()) record.measured = record.start >= *measure_start_;
    if (record.measured) {
      ++done_;
      if (record.error.empty()) generated_ += record.generated_tokens;
    }
    // A window counts the tokens of warm-up calls that arrive inside it too.
    if (record.measured || windowed()) records_.push_back(std::move(record));
    --in_flight_;
    idle_.notify_all();
  }

 private:
  bool windowed() const { return options_.warmup_seconds >= 0; }

  bool Done(int measured_issued) const {
    if (options_.requests > 0) return measured_issued >= options_.requests;
    return Seconds(Clock::now() - *measure_start_) >= options_.duration;
  }

  // A line each second while the load runs, and a last one when it ends.
  void ProgressLoop() {
    if (options_.quiet) return;
    const bool tty = isatty(STDERR_FILENO);
    std::unique_lock lock(mutex_);
    bool last = false;
    while (!last) {
      last = progress_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return finished_; });
      if (!measure_start_ || Clock::now() <= *measure_start_) continue;
      const double t = Seconds(Clock::now() - *measure_start_);
      int errors = 0;
      for (const CallRecord& r : records_) errors += !r.error.empty();
      std::fprintf(stderr,
                   "%s[%6.1f s] %lld done, %d in flight, %.1f req/s, %.0f tok/s, %d errors%s",
                   tty ? "\r" : "", t, static_cast<long long>(done_), in_flight_, done_ / t,
                   generated_ / t, errors, tty && !last ? "" : "\n");
    }
  }

  nlohmann::json Report(Clock::time_point end, double cpu_seconds) const {
    std::vector<double> ttft, itl, e2e;
    std::map<std::string, int64_t> errors;
    int64_t ok = 0, prompt_tokens = 0, generated = 0, measured = 0;
    // A window: tokens and completions inside [measure_start_, window_end) from every call.
    const Clock::time_point window_end =
        windowed() ? *measure_start_ + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options_.duration))
                   : end;
    int64_t window_tokens = 0, window_completed = 0;
    for (const CallRecord& r : records_) {
      if (windowed()) {
        for (const auto& [at, count] : r.arrivals) {
          if (at >= *measure_start_ && at < window_end) window_tokens += count;
        }
        window_completed += r.error.empty() && r.end >= *measure_start_ && r.end < window_end;
      }
      if (!r.measured || (windowed() && r.start >= window_end)) continue;
      ++measured;
      if (!r.error.empty()) {
        ++errors[r.error];
        continue;
      }
      ++ok;
      prompt_tokens += r.prompt_tokens;
      generated += r.generated_tokens;
      e2e.push_back(Seconds(r.end - r.start));
      if (r.first_token) ttft.push_back(Seconds(*r.first_token - r.start));
      itl.insert(itl.end(), r.inter_token.begin(), r.inter_token.end());
    }
    const double elapsed =
        windowed() ? options_.duration : (measure_start_ ? Seconds(end - *measure_start_) : 0);
    const double per = elapsed > 0 ? 1 / elapsed : 0;
    const int64_t total = measured;
    // Without a window, the measured calls' own tokens over the time they took.
    const int64_t counted_tokens = windowed() ? window_tokens : generated;
    const int64_t counted_completed = windowed() ? window_completed : ok;
    return {
        {"config",
         {{"addr", options_.addr},
          {"protocol", options_.protocol},
          {"concurrency", options_.concurrency},
          {"rate", options_.rate},
          {"requests", options_.requests},
          {"duration", options_.duration},
          {"warmup", options_.warmup},
          {"warmup_seconds", options_.warmup_seconds},
          {"measure", windowed() ? "window" : "calls"},
          {"prompt", options_.prompt_ids.empty() ? "text" : "ids"},
          {"prompt_tokens",
           options_.prompt_ids.empty() ? options_.prompt_tokens : options_.prompt_ids},
          {"output_tokens", options_.output_tokens},
          {"temperature", options_.temperature},
          {"channels", options_.channels}}},
        {"elapsed_s", elapsed},
        {"requests", total},
        {"completed", ok},
        {"errors", errors},
        {"requests_per_s", counted_completed * per},
        {"prompt_tokens", prompt_tokens},
        {"generated_tokens", counted_tokens},
        {"prompt_tokens_per_s", prompt_tokens * per},
        {"generated_tokens_per_s", counted_tokens * per},
        {"ttft_s", Summary(ttft)},
        {"ttft_samples_s", ttft},  // each measured call's, in the order they finished (plots)
        {"itl_s", Summary(itl)},
        {"e2e_s", Summary(e2e)},
        {"client_cpu_s", cpu_seconds},
        {"client_cpu_per_request_us", total > 0 ? cpu_seconds / total * 1e6 : 0.0},
        {"client_cpu_per_token_us", generated > 0 ? cpu_seconds / generated * 1e6 : 0.0},
    };
  }

  const Options& options_;
  const CallStarter start_;
  std::mt19937_64 rng_;  // main thread only

  std::mutex mutex_;
  std::condition_variable idle_;                    // in_flight_ fell
  std::condition_variable progress_cv_;             // finished_ set
  int in_flight_ = 0;                               // guarded by mutex_
  int64_t done_ = 0;                                // guarded by mutex_
  int64_t generated_ = 0;                           // guarded by mutex_
  bool finished_ = false;                           // guarded by mutex_
  std::vector<CallRecord> records_;                 // guarded by mutex_
  std::optional<Clock::time_point> measure_start_;  // set by the main thread, read under mutex_
  double cpu_start_ = 0;
};

void GenerateCall::Start(pb::Inference::Stub* stub, const Options& options) {
  if (!options.api_key.empty()) {
    context_.AddMetadata("authorization", absl::StrCat("Bearer ", options.api_key));
  }
  if (options.timeout > 0) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(options.timeout)));
  }
  record_.start = Clock::now();
  stub->async()->Generate(&context_, &request_, this);
  StartRead(&response_);
  StartCall();
}

void GenerateCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows
  record_.AddTokens(response_.token_ids_size(), Clock::now());
  if (response_.has_usage()) record_.prompt_tokens = response_.usage().prompt_tokens();
  StartRead(&response_);
}

void GenerateCall::OnDone(const grpc::Status& status) {
  record_.end = Clock::now();
  if (!status.ok()) record_.error = CodeName(status.error_code());
  finish_(std::move(record_));
  delete this;
}

// What the run needs to know of the served model, from either protocol.
struct ModelFacts {
  int64_t vocab_size = 0;
  bool has_tokenizer = false;
  std::string path, backend;
};
using TokenizeFn = std::function<absl::StatusOr<std::vector<int32_t>>(const std::string&)>;
using DetokenizeFn = std::function<absl::StatusOr<std::string>(const std::vector<int32_t>&)>;

// Prompts for the run: token ids of random lengths below the vocabulary, or windows of the
// corpus's tokens turned back into text (so their length is close to the one asked).
absl::StatusOr<std::vector<Prompt>> MakePrompts(const Options& options, const ModelFacts& model,
                                                const TokenizeFn& tokenize,
                                                const DetokenizeFn& detokenize) {
  std::mt19937_64 rng(options.seed ^ 0x9e3779b97f4a7c15ull);
  constexpr int kPrompts = 256;
  std::vector<Prompt> prompts(kPrompts);
  if (!options.prompt_ids.empty()) {
    absl::StatusOr<Range> lengths = ParseRange(options.prompt_ids, "--prompt-ids", 1);
    if (!lengths.ok()) return lengths.status();
    std::uniform_int_distribution<int> id(0, static_cast<int>(model.vocab_size) - 1);
    for (Prompt& p : prompts) {
      const int n = lengths->Draw(rng);
      for (int i = 0; i < n; ++i) p.ids.push_back(id(rng));
    }
    return prompts;
  }
  if (!model.has_tokenizer) {
    return absl::InvalidArgumentError(
        "the model serves token ids only: give --prompt-ids N (or MIN:MAX)");
  }
  absl::StatusOr<Range> lengths = ParseRange(options.prompt_tokens, "--prompt-tokens", 1);
  if (!lengths.ok()) return lengths.status();
  std::string corpus(kCorpus);
  if (!options.corpus_file.empty()) {
    std::ifstream in(options.corpus_file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in || text.str().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--corpus: cannot read ", options.corpus_file, " (or it is empty)"));
    }
    corpus = text.str();
  }
  absl::StatusOr<std::vector<int32_t>> tokens = tokenize(corpus);
  if (!tokens.ok()) return tokens.status();
  const int corpus_tokens = static_cast<int>(tokens->size());
  if (corpus_tokens == 0) return absl::InvalidArgumentError("the corpus has no tokens");
  std::uniform_int_distribution<int> start(0, corpus_tokens - 1);
  for (Prompt& p : prompts) {
    const int n = lengths->Draw(rng), from = start(rng);
    std::vector<int32_t> window;
    for (int i = 0; i < n; ++i) window.push_back((*tokens)[(from + i) % corpus_tokens]);
    absl::StatusOr<std::string> text = detokenize(window);
    if (!text.ok()) return text.status();
    p.text = *std::move(text);
  }
  return prompts;
}

// The gRPC protocol's facts and tokenizer calls.
struct GrpcModel {
  ModelFacts facts;
  TokenizeFn tokenize;
  DetokenizeFn detokenize;
};

GrpcModel AskGrpc(pb::Inference::Stub& stub, const Options& options, const pb::ModelInfo& info) {
  GrpcModel out;
  out.facts = {.vocab_size = info.vocab_size(),
               .has_tokenizer = !info.tokenizer().empty(),
               .path = info.model_path(),
               .backend = info.backend()};
  auto authorize = [&options](grpc::ClientContext& context) {
    if (!options.api_key.empty()) {
      context.AddMetadata("authorization", absl::StrCat("Bearer ", options.api_key));
    }
  };
  out.tokenize = [&stub,
                  authorize](const std::string& text) -> absl::StatusOr<std::vector<int32_t>> {
    pb::TokenizeRequest request;
    request.set_text(text);
    request.set_add_special_tokens(false);
    pb::TokenizeResponse response;
    grpc::ClientContext context;
    authorize(context);
    if (grpc::Status s = stub.Tokenize(&context, request, &response); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("Tokenize: ", CodeName(s.error_code()), ": ", s.error_message()));
    }
    return std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
  };
  out.detokenize = [&stub,
                    authorize](const std::vector<int32_t>& ids) -> absl::StatusOr<std::string> {
    pb::DetokenizeRequest request;
    for (int32_t id : ids) request.add_token_ids(id);
    pb::DetokenizeResponse response;
    grpc::ClientContext context;
    authorize(context);
    if (grpc::Status s = stub.Detokenize(&context, request, &response); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("Detokenize: ", CodeName(s.error_code()), ": ", s.error_message()));
    }
    return response.text();
  };
  return out;
}

// The OpenAI protocol's facts (GET /v1/models, /tokenizer_info) and tokenizer calls (vLLM's
// /tokenize and /detokenize).
absl::StatusOr<GrpcModel> AskOpenAi(OpenAiClient& client, std::string& model_name) {
  absl::StatusOr<nlohmann::json> models = client.Call("GET", "/v1/models", "");
  if (!models.ok()) return models.status();
  if (!models->contains("data") || (*models)["data"].empty()) {
    return absl::UnavailableError("GET /v1/models: no model");
  }
  const nlohmann::json& card = (*models)["data"][0];
  model_name = card.value("id", "");
  GrpcModel out;
  out.facts.vocab_size = card.value("vocab_size", int64_t{0});
  out.facts.path = model_name;
  out.facts.backend = card.value("backend", "");
  out.facts.has_tokenizer = client.Call("GET", "/tokenizer_info", "").ok();
  out.tokenize = [&client](const std::string& text) -> absl::StatusOr<std::vector<int32_t>> {
    absl::StatusOr<nlohmann::json> r =
        client.Call("POST", "/tokenize",
                    nlohmann::json{{"prompt", text}, {"add_special_tokens", false}}.dump());
    if (!r.ok()) return r.status();
    return (*r)["tokens"].get<std::vector<int32_t>>();
  };
  out.detokenize = [&client](const std::vector<int32_t>& ids) -> absl::StatusOr<std::string> {
    absl::StatusOr<nlohmann::json> r =
        client.Call("POST", "/detokenize", nlohmann::json{{"tokens", ids}}.dump());
    if (!r.ok()) return r.status();
    return (*r)["prompt"].get<std::string>();
  };
  return out;
}

void PrintReport(const nlohmann::json& r) {
  auto line = [](const char* name, const nlohmann::json& s) {
    if (s["count"].get<int64_t>() == 0) {
      std::printf("%-22s (none)\n", name);
      return;
    }
    std::printf("%-22s mean %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f ms\n", name,
                s["mean"].get<double>() * 1e3, s["p50"].get<double>() * 1e3,
                s["p90"].get<double>() * 1e3, s["p99"].get<double>() * 1e3);
  };
  std::printf("requests               %lld completed of %lld in %.2f s\n",
              r["completed"].get<long long>(), r["requests"].get<long long>(),
              r["elapsed_s"].get<double>());
  std::printf("throughput             %.2f req/s, %.1f generated tok/s, %.1f prompt tok/s\n",
              r["requests_per_s"].get<double>(), r["generated_tokens_per_s"].get<double>(),
              r["prompt_tokens_per_s"].get<double>());
  line("time to first token", r["ttft_s"]);
  line("inter-token latency", r["itl_s"]);
  line("end-to-end latency", r["e2e_s"]);
  std::string errors;
  for (const auto& [code, n] : r["errors"].items()) {
    absl::StrAppend(&errors, errors.empty() ? "" : ", ", code, " ", n.get<int64_t>());
  }
  std::printf("errors                 %s\n", errors.empty() ? "none" : errors.c_str());
  std::printf("client CPU             %.3f s (%.1f us/request, %.2f us/token)\n",
              r["client_cpu_s"].get<double>(), r["client_cpu_per_request_us"].get<double>(),
              r["client_cpu_per_token_us"].get<double>());
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"hgrn2-loadgen: streaming Generate (or /v1/completions) load against hgrn2-server"};
  const char* env_addr = std::getenv("HGRN2_ADDR");
  if (env_addr != nullptr && *env_addr != '\0') options.addr = env_addr;
  const char* env_key = std::getenv("HGRN2_API_KEY");
  if (env_key != nullptr) options.api_key = env_key;
  app.add_option("--addr", options.addr, "server HOST:PORT (env HGRN2_ADDR)")
      ->capture_default_str();
  app.add_option("--protocol", options.protocol,
                 "grpc (Generate) or openai (POST /v1/completions, streamed; --addr is then the "
                 "HTTP port)")
      ->capture_default_str()
      ->check(CLI::IsMember({"grpc", "openai"}));
  app.add_option("--api-key", options.api_key, "sent as 'authorization: Bearer KEY'");
  app.add_option("--tls-ca", options.tls_ca, "use TLS, trusting the CA certificates in this PEM");
  CLI::Option* tls_cert =
      app.add_option("--tls-cert", options.tls_cert, "client certificate chain (PEM), mutual TLS")
          ->needs("--tls-ca");
  CLI::Option* tls_key = app.add_option("--tls-key", options.tls_key, "its private key (PEM)");
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  app.add_option("--concurrency", options.concurrency,
                 "calls in flight (with --rate: at most this many)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", options.rate, "Poisson arrivals per second (0: fixed concurrency)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--requests", options.requests, "measured calls (default 100 without --duration)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", options.duration, "seconds of measured load")
      ->check(CLI::NonNegativeNumber);
  CLI::Option* warmup =
      app.add_option("--warmup", options.warmup,
                     "calls that finish before the measured ones start (together)")
          ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup-seconds", options.warmup_seconds,
                 "load without a pause this long, then measure a window of --duration seconds: "
                 "tokens arriving in it, latencies of the calls started in it (steady state)")
      ->check(CLI::NonNegativeNumber)
      ->excludes(warmup);
  app.add_option("--prompt-tokens", options.prompt_tokens,
                 "text prompts of about N (or MIN:MAX) tokens, from the corpus")
      ->capture_default_str();
  app.add_option("--prompt-ids", options.prompt_ids,
                 "random token-id prompts of N (or MIN:MAX) ids below the vocabulary size");
  app.add_option("--corpus", options.corpus_file, "a text file to cut prompts from");
  app.add_option("--output-tokens", options.output_tokens,
                 "generated tokens, N or MIN:MAX (ignore_eos, so exact)")
      ->capture_default_str();
  app.add_option("--temperature", options.temperature)->capture_default_str();
  app.add_option("--timeout", options.timeout, "seconds per call (0: none)");
  app.add_option("--channels", options.channels,
                 "gRPC connections, used in turn; 0: one per 64 calls of --concurrency "
                 "(openai: I/O threads, at least 2)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", options.seed, "for the prompts and lengths")->capture_default_str();
  app.add_option("--json", options.json_path, "also write the report as JSON to this file");
  app.add_flag("--quiet", options.quiet, "no progress line on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  if (options.requests > 0 && options.duration > 0) {
    std::fprintf(stderr, "hgrn2-loadgen: give --requests or --duration, not both\n");
    return kExitUsage;
  }
  if (options.warmup_seconds >= 0 && options.duration == 0) {
    std::fprintf(stderr, "hgrn2-loadgen: --warmup-seconds needs --duration (the window)\n");
    return kExitUsage;
  }
  if (options.requests == 0 && options.duration == 0) options.requests = 100;
  if (options.channels == 0) {
    options.channels = options.protocol == "openai" ? 2 : (options.concurrency + 63) / 64;
  }
  if (absl::StatusOr<Range> r = ParseRange(options.output_tokens, "--output-tokens", 1); !r.ok()) {
    std::fprintf(stderr, "hgrn2-loadgen: %s\n", std::string(r.status().message()).c_str());
    return kExitUsage;
  }

  nlohmann::json report;
  if (options.protocol == "openai") {
    if (!options.tls_ca.empty()) {
      std::fprintf(stderr,
                   "hgrn2-loadgen: --protocol openai speaks plain HTTP only (no --tls-ca)\n");
      return kExitUsage;
    }
    absl::StatusOr<std::unique_ptr<OpenAiClient>> client =
        OpenAiClient::Create(options.addr, options.api_key, std::max(2, options.channels));
    if (!client.ok()) {
      std::fprintf(stderr, "hgrn2-loadgen: %s\n", std::string(client.status().message()).c_str());
      return client.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                          : kExitFailure;
    }
    std::string model_name;
    absl::StatusOr<GrpcModel> model = AskOpenAi(**client, model_name);
    if (!model.ok()) {
      std::fprintf(stderr, "hgrn2-loadgen: %s\n", std::string(model.status().message()).c_str());
      return kExitFailure;
    }
    absl::StatusOr<std::vector<Prompt>> prompts =
        MakePrompts(options, model->facts, model->tokenize, model->detokenize);
    if (!prompts.ok()) {
      std::fprintf(stderr, "hgrn2-loadgen: %s\n", std::string(prompts.status().message()).c_str());
      return prompts.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                           : kExitFailure;
    }
    // The request bodies, but for max_tokens: the same fields as the gRPC driver's requests.
    std::vector<nlohmann::json> bodies;
    for (const Prompt& p : *prompts) {
      nlohmann::json body = {
          {"model", model_name},
          {"temperature", options.temperature},
          {"ignore_eos", true},
          {"stream", true},
          {"stream_options", {{"include_usage", true}, {"continuous_usage_stats", true}}}};
      if (p.ids.empty()) {
        body["prompt"] = p.text;
      } else {
        body["prompt"] = p.ids;
      }
      bodies.push_back(std::move(body));
    }
    OpenAiClient* http = client->get();
    Run run(options, [&bodies, http](int call, int output_tokens, CallRecord record,
                                     std::function<void(CallRecord)> finish) {
      nlohmann::json body = bodies[static_cast<size_t>(call) % bodies.size()];
      body["max_tokens"] = output_tokens;
      http->Stream(body.dump(), std::move(record), std::move(finish));
    });
    report = run.Execute();
    report["model"] = {{"path", model->facts.path},
                       {"vocab_size", model->facts.vocab_size},
                       {"backend", model->facts.backend}};
  } else {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!options.tls_ca.empty()) {
      grpc::SslCredentialsOptions ssl;
      for (const auto& [path, flag, pem] :
           {std::tuple{options.tls_ca, "--tls-ca", &ssl.pem_root_certs},
            std::tuple{options.tls_cert, "--tls-cert", &ssl.pem_cert_chain},
            std::tuple{options.tls_key, "--tls-key", &ssl.pem_private_key}}) {
        if (path.empty()) continue;
        std::ifstream in(path, std::ios::binary);
        if (!in) {
          std::fprintf(stderr, "hgrn2-loadgen: %s %s: cannot read it\n", flag, path.c_str());
          return kExitUsage;
        }
        pem->assign(std::istreambuf_iterator<char>(in), {});
      }
      credentials = grpc::SslCredentials(ssl);
    }
    std::vector<std::unique_ptr<pb::Inference::Stub>> stubs;
    for (int i = 0; i < options.channels; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("hgrn2.loadgen.channel", i);  // distinct arguments: a connection of its own
      stubs.push_back(
          pb::Inference::NewStub(grpc::CreateCustomChannel(options.addr, credentials, args)));
    }
    pb::ModelInfo info;
    grpc::ClientContext info_context;
    info_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!options.api_key.empty()) {
      info_context.AddMetadata("authorization", absl::StrCat("Bearer ", options.api_key));
    }
    if (grpc::Status s = stubs[0]->GetModelInfo(&info_context, {}, &info); !s.ok()) {
      std::fprintf(stderr, "hgrn2-loadgen: GetModelInfo: %s: %s\n",
                   CodeName(s.error_code()).c_str(), s.error_message().c_str());
      return kExitFailure;
    }
    const GrpcModel model = AskGrpc(*stubs[0], options, info);
    absl::StatusOr<std::vector<Prompt>> prompts =
        MakePrompts(options, model.facts, model.tokenize, model.detokenize);
    if (!prompts.ok()) {
      std::fprintf(stderr, "hgrn2-loadgen: %s\n", std::string(prompts.status().message()).c_str());
      return prompts.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                           : kExitFailure;
    }
    std::vector<pb::GenerateRequest> requests;
    for (const Prompt& p : *prompts) {
      pb::GenerateRequest request;
      request.mutable_sampling()->set_temperature(options.temperature);
      request.set_ignore_eos(true);
      if (p.ids.empty()) {
        request.set_text(p.text);
      } else {
        for (int32_t id : p.ids) request.mutable_token_ids()->add_ids(id);
      }
      requests.push_back(std::move(request));
    }
    Run run(options, [&](int call, int output_tokens, CallRecord record,
                         std::function<void(CallRecord)> finish) {
      pb::GenerateRequest request = requests[static_cast<size_t>(call) % requests.size()];
      request.set_max_new_tokens(static_cast<uint32_t>(output_tokens));
      auto* generate = new GenerateCall(std::move(request), std::move(record), std::move(finish));
      generate->Start(stubs[static_cast<size_t>(call) % stubs.size()].get(), options);
    });
    report = run.Execute();
    report["model"] = {{"path", info.model_path()},
                       {"vocab_size", info.vocab_size()},
                       {"backend", info.backend()}};
  }
  PrintReport(report);
  if (!options.json_path.empty()) {
    std::ofstream out(options.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "hgrn2-loadgen: cannot write %s\n", options.json_path.c_str());
      return kExitFailure;
    }
  }
  return 0;
}

}  // namespace
}  // namespace hgrn2::loadgen

int main(int argc, char** argv) { return hgrn2::loadgen::Main(argc, argv); }

// hgrn2-server's flags with CLI11: every flag also from its HGRN2_* variable and a --config file.
#include "server/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "server/core/log.h"
#include "server/server.h"

namespace hgrn2::server {
namespace {

constexpr const char* kConfigVariable = "HGRN2_CONFIG";

// The bundled model, relative to the working directory or, failing that, to the source tree the
// binary was built from.
constexpr const char* kDefaultModel = "models/hgrn2-demo";

std::string DefaultModel() {
  if (std::filesystem::exists(kDefaultModel)) return kDefaultModel;
  const std::filesystem::path built = std::filesystem::path(HGRN2_SOURCE_DIR) / kDefaultModel;
  return std::filesystem::exists(built) ? built.string() : kDefaultModel;
}

// The variable every flag is also read from: --max-running is HGRN2_MAX_RUNNING.
std::string VariableOf(const CLI::Option& option) {
  std::string name = option.get_lnames().front();
  return absl::StrCat("HGRN2_", absl::AsciiStrToUpper(absl::StrReplaceAll(name, {{"-", "_"}})));
}

// CLI11's TOML/INI reader, with one change: a key whose flag's variable is set is left out, so
// that the variable wins over the file (CLI11 reads the file first, and a value from the file
// would stop the variable from being read). A flag on the command line wins over both.
class ConfigBelowVariables : public CLI::ConfigTOML {
 public:
  explicit ConfigBelowVariables(const CLI::App& app) : app_(app) {}

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    std::vector<CLI::ConfigItem> read = CLI::ConfigTOML::from_config(input);
    std::erase_if(read, [this](const CLI::ConfigItem& item) {
      if (!item.parents.empty()) return false;
      const CLI::Option* option = app_.get_option_no_throw("--" + item.name);
      if (option == nullptr || option->get_envname().empty()) return false;
      const char* value = std::getenv(option->get_envname().c_str());
      return value != nullptr && *value != '\0';
    });
    return read;
  }

 private:
  const CLI::App& app_;
};

}  // namespace

std::optional<int> ParseServerFlags(int argc, char** argv, ServerOptions& options) {
  options.model_dir = DefaultModel();
  double drain_seconds = absl::ToDoubleSeconds(options.drain_timeout);
  double health_interval_seconds = absl::ToDoubleSeconds(options.health_check_interval);
  std::string session_store = absl::StrJoin(options.sessions.kinds, ",");
  double session_ttl_seconds = absl::ToDoubleSeconds(options.sessions.ttl);
  std::string log_format = "text";
  CLI::App app{
      "hgrn2-server: the hgrn2.v1 gRPC (and OpenAI-compatible HTTP) inference server for HGRN2 "
      "models.\n"
      "Every flag can also be set by its variable (--max-running: HGRN2_MAX_RUNNING) or in the\n"
      "--config file (max-running = 64); a flag wins over its variable, a variable over the file."};
  // --config first, so that --help lists it first.
  const char* config_variable = std::getenv(kConfigVariable);
  const std::string config_from_variable = config_variable != nullptr ? config_variable : "";
  app.config_formatter(std::make_shared<ConfigBelowVariables>(app));
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error
  CLI::Option* config_flag = app.set_config(
      "--config", config_from_variable,
      "TOML or INI file of flag values, one 'flag-name = value' a line (e.g. a Kubernetes "
      "ConfigMap)");
  CLI::Option* model_flag =
      app.add_option("--model", options.model_dir,
                     "model folder: config.json, safetensors weights, optionally a tokenizer")
          ->capture_default_str();
  app.add_option("--preset", options.preset,
                 "instead of --model: random weights of a benchmark shape (1.3b, 370m, tiny), "
                 "token ids only")
      ->excludes(model_flag);
  app.add_option("--host", options.host, "address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "gRPC port (0 = any free port)")->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port,
                 "Prometheus /metrics port (0 = no metrics endpoint)")
      ->capture_default_str();
  app.add_option("--metrics-host", options.metrics_host,
                 "address for /metrics (default: the same as --host)");
  app.add_flag("--metrics-tls", options.metrics_tls,
               "serve /metrics over HTTPS with --tls-cert and --tls-key (and, with "
               "--tls-client-ca, only to clients with a certificate it signed)");
  app.add_option("--metrics-tenant-limit", options.metrics_tenant_limit,
                 "label request metrics by tenant (API keys) for the first N tenants seen, the "
                 "rest as \"other\" (0 = no tenant label)")
      ->capture_default_str();
  app.add_option("--served-model-name", options.served_model_name,
                 "the model's name in metrics (label model_name) and logs (default: the model "
                 "folder's name)");
  app.add_option("--log-format", log_format,
                 "text (one line a message) or json (one JSON object a line: time, level, "
                 "message, fields)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--http-port", options.http_port,
                 "OpenAI-compatible HTTP API port (/v1/completions, /v1/chat/completions, ...; "
                 "0 = off)")
      ->capture_default_str();
  app.add_option("--http-threads", options.http_threads, "I/O threads of the HTTP API")
      ->capture_default_str();
  app.add_option("--chat-template", options.chat_template_file,
                 "Jinja chat template file for /v1/chat/completions (default: the model's own "
                 "from tokenizer_config.json, else a built-in one)");
  app.add_option("--device", options.device, "cpu, cuda or auto (cuda when a GPU is present)")
      ->capture_default_str();
  app.add_option("--dtype", options.dtype,
                 "cuda: weights and activations, bf16, f16 or f32; or fp8: the projections in FP8 "
                 "(E4M3, a scale per output channel) with bf16 activations, half the weight "
                 "memory (cuda and cpu)")
      ->capture_default_str();
  app.add_option("--state-dtype", options.state_dtype,
                 "recurrent states: f32, or bf16 (cuda; half the memory)")
      ->capture_default_str();
  app.add_option("--gpu-wait", options.gpu_wait,
                 "cuda: how the host waits for the device, spin (polls on a core) or block "
                 "(sleeps, frees the core)")
      ->check(CLI::IsMember({"block", "spin"}))
      ->capture_default_str();
  app.add_option("--max-running", options.engine.max_running,
                 "sequences advanced together (the decode batch)")
      ->capture_default_str();
  app.add_option("--num-slots", options.engine.num_slots,
                 "device state slots (0 = --max-running; more keep finished states longer)")
      ->capture_default_str();
  app.add_option("--max-queued", options.engine.max_queued,
                 "requests waiting beyond that; more get RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--prefill-token-budget", options.engine.prefill_token_budget,
                 "prompt tokens fed per scheduler iteration while sequences decode")
      ->capture_default_str();
  options.engine.max_prefill_token_budget = EngineOptions::kAutoPrefillBudget;
  app.add_option("--max-prefill-token-budget", options.engine.max_prefill_token_budget,
                 "most prompt tokens per iteration when prompts pile up (a quarter of those "
                 "waiting, all of it with nothing decoding); 0 = --prefill-token-budget always, "
                 "-1 = 8x it on cuda, 0 on cpu")
      ->capture_default_str();
  app.add_option("--warm-batches", options.engine.warm_decode_batches,
                 "decode batch sizes 1..N run at start-up so no request waits for a new size's "
                 "graph (-1 = every size up to --max-running on cuda, none on cpu)")
      ->capture_default_str();
  app.add_option("--swap-slots", options.engine.swap_slots,
                 "host slots for preempted sequences (0 = no preemption)")
      ->capture_default_str();
  app.add_option("--max-prompt-tokens", options.limits.max_prompt_tokens,
                 "longest prompt or scored text, in tokens")
      ->capture_default_str();
  app.add_option("--max-new-tokens", options.limits.max_new_tokens,
                 "largest max_new_tokens a request may ask for")
      ->capture_default_str();
  app.add_option("--default-max-new-tokens", options.limits.default_max_new_tokens,
                 "max_new_tokens of a request that leaves it at 0")
      ->capture_default_str();
  app.add_option("--drain-timeout", drain_seconds,
                 "seconds in-flight requests get to finish after SIGTERM/SIGINT")
      ->capture_default_str();
  app.add_option("--health-check-interval", health_interval_seconds,
                 "seconds between health probes (a tiny forward pass; 0 = off)")
      ->capture_default_str();
  app.add_option("--stream-threads", options.stream_threads,
                 "threads that turn tokens into stream messages")
      ->capture_default_str();
  app.add_option("--max-n", options.limits.max_samples,
                 "most samples one Generate request may ask for (n)")
      ->capture_default_str();
  app.add_option("--prefix-cache-bytes", options.engine.prefix_cache_bytes,
                 "device memory for the states of recent prompts, so prompts that extend them "
                 "skip their prefill (0 = off)")
      ->capture_default_str();
  app.add_option("--session-store", session_store,
                 "where sessions live: memory, dir, redis, or a chain front to back such as "
                 "memory,dir or memory,redis (none = sessions off)")
      ->capture_default_str();
  app.add_option("--session-dir", options.sessions.dir,
                 "folder of the dir store (durable: a saved session survives a crash)");
  app.add_option("--redis-url", options.sessions.redis_url,
                 "Redis of the redis store: redis://[:password@]host:port[/db]");
  app.add_option("--session-ttl", session_ttl_seconds,
                 "seconds a saved session is kept after its last save (0 = until evicted)")
      ->capture_default_str();
  app.add_option("--session-memory-bytes", options.sessions.memory_bytes,
                 "byte budget of the memory store (least recently used go first)")
      ->capture_default_str();
  app.add_option("--session-dir-max-bytes", options.sessions.dir_max_bytes,
                 "byte cap of the dir store (0 = no cap)")
      ->capture_default_str();
  app.add_option("--session-threads", options.session_threads,
                 "threads for session store reads and writes")
      ->capture_default_str();
  // What one client may ask of the server: each request's sizes (refused with INVALID_ARGUMENT
  // naming the field and the flag), messages and streams per connection (docs/security.md).
  app.add_option("--max-text-bytes", options.limits.max_text_bytes,
                 "longest text prompt, context or continuation, in bytes")
      ->capture_default_str();
  app.add_option("--max-stop-strings", options.limits.max_stop_strings,
                 "most stop strings in one request")
      ->capture_default_str();
  app.add_option("--max-stop-string-bytes", options.limits.max_stop_string_bytes,
                 "longest stop string, in bytes")
      ->capture_default_str();
  app.add_option("--max-stop-total-bytes", options.limits.max_stop_total_bytes,
                 "bytes of all of one request's stop strings together")
      ->capture_default_str();
  app.add_option("--max-stop-token-ids", options.limits.max_stop_token_ids,
                 "most stop token ids in one request")
      ->capture_default_str();
  app.add_option("--max-logprobs", options.limits.max_logprobs,
                 "most alternatives per token for logprobs / top_logprobs (at most 20)")
      ->capture_default_str();
  app.add_option("--max-logit-bias", options.limits.max_logit_bias,
                 "most logit_bias entries in one request")
      ->capture_default_str();
  app.add_option("--max-request-id-bytes", options.limits.max_request_id_bytes,
                 "longest client-given request_id, in bytes")
      ->capture_default_str();
  app.add_option("--max-detokenize-ids", options.limits.max_detokenize_ids,
                 "most token ids in one Detokenize request")
      ->capture_default_str();
  app.add_option("--max-message-bytes", options.max_receive_message_bytes,
                 "largest request message, in bytes (larger: RESOURCE_EXHAUSTED)")
      ->capture_default_str();
  app.add_option("--max-streams-per-connection", options.max_streams_per_connection,
                 "calls one client connection may have open at once (more wait)")
      ->capture_default_str();
  // Transport security and API keys (server/tls.h, server/core/access_control.h).
  CLI::Option* tls_cert_flag = app.add_option(
      "--tls-cert", options.tls.cert_file,
      "PEM certificate chain for TLS on the gRPC and HTTP ports (server certificate first); "
      "reloaded on SIGHUP");
  CLI::Option* tls_key_flag = app.add_option("--tls-key", options.tls.key_file,
                                             "PEM private key of --tls-cert; reloaded on SIGHUP");
  tls_cert_flag->needs(tls_key_flag);
  tls_key_flag->needs(tls_cert_flag);
  app.add_option("--tls-client-ca", options.tls.client_ca_file,
                 "PEM CA certificates: clients must present a certificate they signed (mutual "
                 "TLS); reloaded on SIGHUP")
      ->needs(tls_cert_flag);
  app.add_option("--api-keys", options.api_keys_file,
                 "JSON file of tenants and SHA-256 hashes of their API keys: every Inference and "
                 "Sessions call then needs \"authorization: Bearer <key>\"; reloaded on SIGHUP");
  // Every flag from its variable too (shown in --help as "Env:").
  for (CLI::Option* option : app.get_options()) {
    if (option == config_flag) {
      option->envname(kConfigVariable);
    } else if (option != app.get_help_ptr()) {
      option->envname(VariableOf(*option));
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-server: %s (see --help)\n", e.what());
    return kExitUsage;
  }
  // CLI11 skips a default config file that is missing (the one HGRN2_CONFIG names); it must
  // exist as much as one named by --config.
  if (const std::string config = config_flag->as<std::string>();
      !config.empty() && !std::filesystem::is_regular_file(config)) {
    std::fprintf(stderr, "hgrn2-server: %s=%s: no such file (see --help)\n", kConfigVariable,
                 config.c_str());
    return kExitUsage;
  }
  SetLogFormat(*ParseLogFormat(log_format));
  // The request limits are checked by Server::Start (CheckLimits) before the model loads.
  if (drain_seconds < 0 || health_interval_seconds < 0 || session_ttl_seconds < 0 ||
      options.stream_threads < 1 || options.session_threads < 1) {
    std::fprintf(stderr,
                 "hgrn2-server: --drain-timeout, --health-check-interval and --session-ttl must "
                 "be >= 0, and --stream-threads and --session-threads >= 1\n");
    return kExitUsage;
  }
  options.drain_timeout = absl::Seconds(drain_seconds);
  options.health_check_interval = absl::Seconds(health_interval_seconds);
  options.sessions.ttl = absl::Seconds(session_ttl_seconds);
  options.sessions.kinds.clear();
  if (session_store != "none") {
    options.sessions.kinds = absl::StrSplit(session_store, ',', absl::SkipEmpty());
  }
  return std::nullopt;
}

}  // namespace hgrn2::server

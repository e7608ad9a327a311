// ServerOptions: everything hgrn2-server's flags set, with their defaults, in one struct.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/session/session_store.h"
#include "server/core/model_context.h"

namespace hgrn2::server {

// TLS on the gRPC and HTTP ports (server/tls.h). Plaintext while cert_file is empty.
struct TlsOptions {
  std::string cert_file;       // PEM certificate chain, the server's first
  std::string key_file;        // PEM private key of that certificate
  std::string client_ca_file;  // set: clients must present a certificate signed by these CAs
};

struct ServerOptions {
  // The server's defaults beyond the engine's: a prefix cache, sessions in host memory.
  ServerOptions() {
    engine.prefix_cache_bytes = int64_t{1} << 30;
    sessions.kinds = {"memory"};
  }

  std::string model_dir;  // config.json, weights and (optionally) a tokenizer
  // Instead of model_dir: random weights of a named shape (engine/checkpoint/model_presets.h), no
  // tokenizer; for benchmarks of the serving path (bench/serving/).
  std::string preset;
  std::string host = "0.0.0.0";
  int port = 50051;          // 0 = any free port (the bound one is logged and in Server::port())
  int metrics_port = 9400;   // 0 = no metrics endpoint
  std::string metrics_host;  // empty: the same as host
  // /metrics over HTTPS with the gRPC port's certificate (tls below), client certificates
  // required when tls.client_ca_file is set; reloads reach it as they reach the gRPC port.
  bool metrics_tls = false;
  // The tenant label of the request metrics: 0 = none; N = the first N tenants seen get their own
  // value, the rest share "other" (server/metrics.h).
  int metrics_tenant_limit = 0;
  // The label model_name of every metric; empty: the model folder's name ("random:<preset>" for
  // a preset).
  std::string served_model_name;
  // The OpenAI-compatible HTTP API (server/http/, docs/openai-api.md) on host, with the same TLS,
  // API keys, limits and metrics as gRPC. 0 = off.
  int http_port = 8000;
  int http_threads = 2;  // its I/O threads (every connection is asynchronous)
  // A Jinja chat template for /v1/chat/completions; empty: the model's own (tokenizer_config.json
  // or chat_template.jinja), else a built-in default.
  std::string chat_template_file;
  std::string device = "auto";  // cpu, cuda or auto
  std::string dtype = "bf16";   // weights and activations (bf16, f16, f32; cuda) or fp8 weights
  std::string state_dtype = "f32";
  // cuda: how the host waits for a step, spin (fastest) or block (frees the scheduler's core for
  // 2-5% of step time: CudaBackendOptions::Wait).
  std::string gpu_wait = "spin";
  // Tests: serve on this backend instead of one made from device and dtype.
  std::shared_ptr<Backend> backend;
  EngineOptions engine;
  RequestLimits limits;
  // SIGTERM/SIGINT: in-flight requests get this long to finish before they are cut off.
  absl::Duration drain_timeout = absl::Seconds(30);
  // A tiny forward pass this often checks the device; health goes NOT_SERVING when it fails or
  // takes longer than health_check_timeout. Zero turns the periodic check off.
  absl::Duration health_check_interval = absl::Seconds(10);
  absl::Duration health_check_timeout = absl::Seconds(30);
  // Threads that turn engine tokens into stream messages (detokenize, stop strings, writes).
  int stream_threads = 2;
  // Largest request message accepted (bytes); gRPC answers RESOURCE_EXHAUSTED beyond it.
  int max_receive_message_bytes = 16 << 20;
  // Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a
  // client's further calls wait in its own transport until one ends. As many as the engine can
  // run at once on a large card: a gateway (Envoy, an ingress) multiplexes its clients' streams
  // over a few connections, and a lower cap queues their calls out of the server's sight (100
  // here held a 256-stream client at 100 calls in flight: time to first token 2.2 s instead of
  // 10 ms). Admission is bounded by --max-queued and --max-running, not by this.
  int max_streams_per_connection = 1024;
  // Where sessions are kept (kinds "memory", "dir", "redis", chained front to back); empty
  // kinds turn sessions off.
  session::SessionStoreOptions sessions;
  // Threads for session store I/O (loads, saves, exports), which may block on disk or network.
  int session_threads = 4;
  // TLS, and mutual TLS with a client CA; reloaded on SIGHUP (Server::Reload).
  TlsOptions tls;
  // API keys and tenants (server/core/access_control.h); empty: every caller is let in as tenant
  // "". Reloaded on SIGHUP.
  std::string api_keys_file;
};

}  // namespace hgrn2::server

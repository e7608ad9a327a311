// ServerMetrics: the Prometheus metrics of the server (prefix hgrn2_), kept by prometheus-cpp and
// served on /metrics of the metrics port by cpp-httplib. Request handlers and the engine's step
// hook record into it; the engine's counters and gauges are read from Engine::Stats() at each
// scrape. Every series carries the label model_name (--served-model-name), so that one Prometheus
// can tell the models of a fleet apart.
//
// Why not prometheus-cpp's own Exposer: its web server (civetweb) starts threads with 100 KiB
// stacks, and a process that loads cuBLAS (94 KiB of static thread-local storage) cannot create
// threads that small, so the Exposer fails to start in every CUDA build.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/session/session_manager.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace httplib {
class Server;
}  // namespace httplib

namespace hgrn2::server {

// The session counters a scrape reads.
struct SessionMetrics {
  session::SessionStoreStats store;
  session::SessionManagerStats manager;
};

// Thread-safety: every method may be called from any thread.
class ServerMetrics {
 public:
  // Every series is labelled model_name="<served_model_name>" (none when it is empty, as in tests
  // of the core alone; the server always names the model). The tenant label (of
  // hgrn2_refused_calls_total, and of hgrn2_requests_total and hgrn2_request_duration_seconds when
  // their callers pass one) is opt-in: with tenant_label_limit = 0 there is none; with N > 0 the
  // first N tenants seen get their own value and every later one shares "other", so a client
  // cannot grow the series without bound.
  explicit ServerMetrics(std::string served_model_name = "", int tenant_label_limit = 0);
  ~ServerMetrics();

  // What the label "other" stands for once the tenant limit is reached.
  static constexpr const char* kOtherTenants = "other";

  // Serves /metrics on `host`:`port` (port 0 picks one); over HTTPS when `https` is set (it sets
  // up each connection's TLS, see ServingTls::ConfigureHttps). Unavailable naming the address
  // when it cannot bind.
  absl::Status Serve(const std::string& host, int port,
                     std::function<bool(SSL_CTX&)> https = nullptr);
  // Stops serving /metrics and waits for a scrape in progress (idempotent). The owner calls it
  // before the session and engine stats sources go.
  void StopServing();
  // The bound port, or 0 when not serving.
  int port() const { return port_; }
  // What a scrape returns: the text exposition format.
  std::string Render() const;
  const std::string& served_model_name() const { return served_model_name_; }

  // Where scrapes read the engine's counters; unset (or returning nothing) before the engine runs.
  void SetEngineStatsSource(std::function<EngineStats()> source);
  // Where scrapes read the session counters; unset when sessions are off.
  void SetSessionStatsSource(std::function<SessionMetrics()> source);
  // Static facts about what is served, exported as hgrn2_model_info{...} 1.
  void SetModelInfo(const std::string& model, const std::string& backend, const std::string& dtype);
  void SetServing(bool serving);

  // A call refused by access control before it started: `reason` is missing_api_key,
  // malformed_api_key, unknown_api_key, max_concurrent_requests or tokens_per_minute; `tenant` is
  // empty until a key named one. Never labelled with anything of the key.
  void RecordRefusedCall(const std::string& reason, const std::string& tenant);
  // One finished call: its method ("Generate") and final code (gRPC's numbering and names), and
  // the caller's tenant (used only when the tenant label is on).
  void RecordRequest(const std::string& rpc, absl::StatusCode code, double seconds,
                     const std::string& tenant = "");
  void RecordTimeToFirstToken(double seconds) { time_to_first_token_->Observe(seconds); }
  void RecordInterTokenLatency(double seconds) { inter_token_latency_->Observe(seconds); }
  void RecordQueueTime(double seconds) { queue_time_->Observe(seconds); }
  // The engine's step hook.
  void RecordStep(const StepReport& step);
  void StreamStarted() { active_streams_->Increment(); }
  void StreamEnded() { active_streams_->Decrement(); }

 private:
  class EngineCollector;

  // The tenant label's value for `tenant` under the limit (see the constructor).
  std::string TenantLabel(const std::string& tenant);

  const std::string served_model_name_;
  const int tenant_label_limit_;
  std::mutex tenants_mutex_;
  std::unordered_set<std::string> tenants_;  // those with a label of their own
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int port_ = 0;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Counter>* refused_calls_ = nullptr;
  prometheus::Family<prometheus::Histogram>* request_duration_ = nullptr;
  prometheus::Histogram* time_to_first_token_ = nullptr;
  prometheus::Histogram* inter_token_latency_ = nullptr;
  prometheus::Histogram* queue_time_ = nullptr;
  prometheus::Histogram* decode_step_ = nullptr;
  prometheus::Histogram* decode_batch_ = nullptr;
  prometheus::Histogram* prefill_tokens_ = nullptr;
  prometheus::Gauge* active_streams_ = nullptr;
  prometheus::Gauge* serving_ = nullptr;
  prometheus::Family<prometheus::Gauge>* model_info_ = nullptr;
};

}  // namespace hgrn2::server

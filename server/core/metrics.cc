// The server's Prometheus metrics: families, buckets, and the engine collector read at scrape.
#include "server/core/metrics.h"

#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace hgrn2::server {
namespace {

// Latencies from 0.5 ms to 60 s.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
          0.2,    0.5,   1.0,   2.0,   5.0,  10.0, 20.0, 60.0};
}

prometheus::Histogram::BucketBoundaries CountBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
}

prometheus::MetricFamily Single(const std::string& name, const std::string& help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family{name, help, type, {}};
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

// Reads Engine::Stats() at each scrape, so the values are as of the scrape.
class ServerMetrics::EngineCollector {
 public:
  void SetSource(std::function<EngineStats()> source) {
    std::lock_guard<std::mutex> lock(mutex_);
    source_ = std::move(source);
  }
  void SetSessionSource(std::function<SessionMetrics()> source) {
    std::lock_guard<std::mutex> lock(mutex_);
    session_source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const {
    std::function<EngineStats()> source;
    std::function<SessionMetrics()> session_source;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      source = source_;
      session_source = session_source_;
    }
    std::vector<prometheus::MetricFamily> families;
    if (source) families = EngineFamilies(source());
    if (session_source) {
      for (prometheus::MetricFamily& family : SessionFamilies(session_source())) {
        families.push_back(std::move(family));
      }
    }
    return families;
  }

 private:
  static std::vector<prometheus::MetricFamily> EngineFamilies(const EngineStats& s) {
    using prometheus::MetricType;
    const auto d = [](int64_t v) { return static_cast<double>(v); };
    return {
        Single("hgrn2_prompt_tokens_total",
               "Prompt tokens fed through the model (generation and "
               "scoring).",
               MetricType::Counter, d(s.prompt_tokens)),
        Single("hgrn2_generated_tokens_total", "Tokens generated.", MetricType::Counter,
               d(s.generated_tokens)),
        Single("hgrn2_engine_steps_total", "Scheduler iterations that ran the model.",
               MetricType::Counter, d(s.steps)),
        Single("hgrn2_preemptions_total", "Running sequences swapped out for higher priority.",
               MetricType::Counter, d(s.preemptions)),
        Single("hgrn2_queue_depth", "Requests waiting for their first admission.",
               MetricType::Gauge, d(s.queued)),
        Single("hgrn2_running_sequences", "Sequences in prefill or decode.", MetricType::Gauge,
               d(s.running)),
        Single("hgrn2_swapped_sequences", "Preempted sequences whose state is in host memory.",
               MetricType::Gauge, d(s.swapped)),
        Single("hgrn2_state_slots_used",
               "Device state slots holding a running or parked "
               "sequence.",
               MetricType::Gauge, d(s.num_slots - s.free_slots)),
        Single("hgrn2_state_slots_total", "Device state slots.", MetricType::Gauge, d(s.num_slots)),
        Single("hgrn2_prefix_cache_hits_total",
               "Requests that started from a cached prompt-prefix state.", MetricType::Counter,
               d(s.prefix_cache_hits)),
        Single("hgrn2_prefix_cache_misses_total",
               "Requests that looked in the prefix cache and found no prefix.", MetricType::Counter,
               d(s.prefix_cache_misses)),
        Single("hgrn2_prefix_cache_evictions_total", "Prefix cache entries evicted (LRU).",
               MetricType::Counter, d(s.prefix_cache_evictions)),
        Single("hgrn2_prefix_cache_tokens_total",
               "Prompt tokens not fed because their state came from the prefix cache.",
               MetricType::Counter, d(s.prefix_cache_tokens)),
        Single("hgrn2_prefix_cache_entries", "States in the prefix cache.", MetricType::Gauge,
               d(s.prefix_cache_entries)),
        Single("hgrn2_prefix_cache_capacity", "States the prefix cache can hold.",
               MetricType::Gauge, d(s.prefix_cache_capacity)),
    };
  }

  static std::vector<prometheus::MetricFamily> SessionFamilies(const SessionMetrics& m) {
    using prometheus::MetricType;
    const auto d = [](int64_t v) { return static_cast<double>(v); };
    const session::SessionStoreStats& s = m.store;
    return {
        Single("hgrn2_sessions_stored", "Sessions in the session store (its front store).",
               MetricType::Gauge, d(s.sessions)),
        Single("hgrn2_session_bytes", "Bytes of the sessions in the session store.",
               MetricType::Gauge, d(s.bytes)),
        Single("hgrn2_session_saves_total", "Sessions saved (requests and imports).",
               MetricType::Counter, d(s.saves)),
        Single("hgrn2_session_loads_total", "Session reads (resumes and exports).",
               MetricType::Counter, d(s.loads)),
        Single("hgrn2_session_hits_total", "Session reads that found the session.",
               MetricType::Counter, d(s.hits)),
        Single("hgrn2_session_misses_total", "Session reads that found none.", MetricType::Counter,
               d(s.misses)),
        Single("hgrn2_session_evictions_total", "Sessions dropped for the byte budget.",
               MetricType::Counter, d(s.evictions)),
        Single("hgrn2_session_expirations_total", "Sessions dropped at their TTL.",
               MetricType::Counter, d(s.expirations)),
        Single("hgrn2_session_store_errors_total",
               "Session store operations that failed (disk, network).", MetricType::Counter,
               d(s.errors)),
        Single("hgrn2_session_export_bytes_total", "Snapshot bytes sent by ExportSession.",
               MetricType::Counter, d(m.manager.export_bytes)),
        Single("hgrn2_session_import_bytes_total", "Snapshot bytes stored by ImportSession.",
               MetricType::Counter, d(m.manager.import_bytes)),
        Single("hgrn2_session_save_conflicts_total",
               "Saves refused (ABORTED): another request was saving the same session, or had "
               "saved it since the revision the save expected.",
               MetricType::Counter, d(m.manager.save_conflicts)),
    };
  }

  mutable std::mutex mutex_;
  std::function<EngineStats()> source_;
  std::function<SessionMetrics()> session_source_;
};

ServerMetrics::ServerMetrics(std::string served_model_name, int tenant_label_limit)
    : served_model_name_(std::move(served_model_name)),
      tenant_label_limit_(tenant_label_limit),
      registry_(std::make_shared<prometheus::Registry>()),
      engine_collector_(std::make_shared<EngineCollector>()) {
  auto& registry = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("hgrn2_requests_total")
                   .Help("Finished RPCs by method and gRPC status code.")
                   .Register(registry);
  request_duration_ = &prometheus::BuildHistogram()
                           .Name("hgrn2_request_duration_seconds")
                           .Help("Time from the RPC's arrival to its end, by method.")
                           .Register(registry);
  auto histogram = [&](const char* name, const char* help,
                       const prometheus::Histogram::BucketBoundaries& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
  };
  time_to_first_token_ = histogram("hgrn2_time_to_first_token_seconds",
                                   "Generate: from the request's arrival to its first token "
                                   "handed to gRPC.",
                                   LatencyBuckets());
  inter_token_latency_ = histogram("hgrn2_inter_token_latency_seconds",
                                   "Generate: time between consecutive tokens handed to gRPC "
                                   "(tokens of one message share the time since the last).",
                                   LatencyBuckets());
  queue_time_ =
      histogram("hgrn2_queue_time_seconds",
                "From submission to the engine until the first admission.", LatencyBuckets());
  decode_step_ = histogram("hgrn2_decode_step_seconds",
                           "Wall time of a scheduler iteration (prefill chunk and decode step).",
                           LatencyBuckets());
  decode_batch_ = histogram("hgrn2_decode_batch_size", "Sequences advanced by one decode step.",
                            CountBuckets());
  prefill_tokens_ =
      histogram("hgrn2_prefill_tokens_per_step",
                "Prompt tokens fed in one scheduler iteration (when any).", CountBuckets());
  active_streams_ = &prometheus::BuildGauge()
                         .Name("hgrn2_active_streams")
                         .Help("Generate streams open now.")
                         .Register(registry)
                         .Add({});
  serving_ = &prometheus::BuildGauge()
                  .Name("hgrn2_serving")
                  .Help("1 while the health service says SERVING.")
                  .Register(registry)
                  .Add({});
  refused_calls_ = &prometheus::BuildCounter()
                        .Name("hgrn2_refused_calls_total")
                        .Help(
                            "Calls refused by access control (API keys, tenant limits), by "
                            "reason (and tenant, with --metrics-tenant-limit).")
                        .Register(registry);
  model_info_ = &prometheus::BuildGauge()
                     .Name("hgrn2_model_info")
                     .Help("What the server runs (value 1).")
                     .Register(registry);
}

ServerMetrics::~ServerMetrics() { StopServing(); }

void ServerMetrics::StopServing() {
  if (!http_) return;
  http_->stop();
  http_thread_.join();
  http_.reset();
}

absl::Status ServerMetrics::Serve(const std::string& host, int port,
                                  std::function<bool(SSL_CTX&)> https) {
  std::unique_ptr<httplib::Server> http;
  if (https) {
    http = std::make_unique<httplib::SSLServer>(https);
    if (!http->is_valid()) {
      return absl::InternalError("metrics: OpenSSL refused the TLS set-up of the metrics port");
    }
  } else {
    http = std::make_unique<httplib::Server>();
  }
  // cpp-httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port
  // and take half the scrapes; SO_REUSEADDR alone makes a port in use an error.
  http->set_socket_options([](socket_t socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const int bound =
      port == 0 ? http->bind_to_any_port(host) : (http->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port,
                                               " (in use, or no such address)"));
  }
  http_ = std::move(http);
  port_ = bound;
  http_thread_ = std::thread([server = http_.get()] { server->listen_after_bind(); });
  pthread_setname_np(http_thread_.native_handle(), "hgrn2-metrics");
  return absl::OkStatus();
}

std::string ServerMetrics::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> no_families;
  for (prometheus::MetricFamily& family : engine_collector_->Collect()) {
    families.push_back(std::move(family));
  }
  // The served model's name on every series, in the place a constant label would have (labels
  // sorted by name), whichever way the family was made.
  const prometheus::ClientMetric::Label model{"model_name", served_model_name_};
  for (prometheus::MetricFamily& family : served_model_name_.empty() ? no_families : families) {
    for (prometheus::ClientMetric& metric : family.metric) {
      auto at = std::find_if(metric.label.begin(), metric.label.end(),
                             [&](const auto& label) { return label.name > model.name; });
      metric.label.insert(at, model);
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

std::string ServerMetrics::TenantLabel(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(tenants_mutex_);
  if (tenant.empty() || tenants_.contains(tenant)) return tenant;
  if (static_cast<int>(tenants_.size()) < tenant_label_limit_) {
    tenants_.insert(tenant);
    return tenant;
  }
  return kOtherTenants;
}

void ServerMetrics::SetEngineStatsSource(std::function<EngineStats()> source) {
  engine_collector_->SetSource(std::move(source));
}

void ServerMetrics::SetSessionStatsSource(std::function<SessionMetrics()> source) {
  engine_collector_->SetSessionSource(std::move(source));
}

void ServerMetrics::SetModelInfo(const std::string& model, const std::string& backend,
                                 const std::string& dtype) {
  model_info_->Add({{"model", model}, {"backend", backend}, {"dtype", dtype}}).Set(1);
}

void ServerMetrics::SetServing(bool serving) { serving_->Set(serving ? 1 : 0); }

void ServerMetrics::RecordRequest(const std::string& rpc, absl::StatusCode code, double seconds,
                                  const std::string& tenant) {
  const std::string code_name = absl::StatusCodeToString(code);
  if (tenant_label_limit_ > 0) {
    const std::string label = TenantLabel(tenant);
    requests_->Add({{"rpc", rpc}, {"code", code_name}, {"tenant", label}}).Increment();
    request_duration_->Add({{"rpc", rpc}, {"tenant", label}}, LatencyBuckets()).Observe(seconds);
    return;
  }
  requests_->Add({{"rpc", rpc}, {"code", code_name}}).Increment();
  request_duration_->Add({{"rpc", rpc}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordRefusedCall(const std::string& reason, const std::string& tenant) {
  if (tenant_label_limit_ > 0) {
    refused_calls_->Add({{"reason", reason}, {"tenant", TenantLabel(tenant)}}).Increment();
  } else {
    refused_calls_->Add({{"reason", reason}}).Increment();
  }
}

void ServerMetrics::RecordStep(const StepReport& step) {
  decode_step_->Observe(step.seconds);
  if (step.decode_sequences > 0) decode_batch_->Observe(static_cast<double>(step.decode_sequences));
  if (step.prefill_tokens > 0) prefill_tokens_->Observe(static_cast<double>(step.prefill_tokens));
}

}  // namespace hgrn2::server

// Server: hgrn2-server's parts put together — the model, the engine, the gRPC services (inference,
// health, reflection), the OpenAI-compatible HTTP API, the metrics endpoint, the health probe and
// the graceful shutdown.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/server.h"
#include "server/core/access_control.h"
#include "server/core/call_tracker.h"
#include "server/core/metrics.h"
#include "server/core/worker_pool.h"
#include "server/grpc/inference_service.h"
#include "server/grpc/sessions_service.h"
#include "server/http/http_server.h"
#include "server/http/openai_api.h"
#include "server/options.h"
#include "server/tls.h"

namespace hgrn2::server {

// Thread-safety: Shutdown and Wait may be called from any thread, once each; Reload from any
// thread, any number of times.
class Server {
 public:
  // The model's name in metrics, logs and the OpenAI API (/v1/models, "model" in replies):
  // options.served_model_name, or what it defaults to, the model folder's name.
  static std::string ServedModelName(const ServerOptions& options);

  // Loads the model and its tokenizer, starts the engine, runs a warm-up (a scoring pass and a
  // short generation), binds the ports and starts serving: health is SERVING when this returns.
  // InvalidArgument for bad options or a model that cannot be loaded; Unavailable for a port
  // that cannot be bound; Internal when the warm-up fails.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  // Shutdown(absl::ZeroDuration()) if not shut down yet.
  ~Server();

  int port() const { return port_; }
  // The OpenAI-compatible HTTP API's port; 0 when it is off.
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  int metrics_port() const { return metrics_.port(); }
  const ModelConfig& config() const { return model_->config(); }

  // Graceful shutdown: health goes NOT_SERVING and new calls get UNAVAILABLE at once; calls in
  // progress get up to `drain_timeout` to finish; then the engine stops (what is left ends with
  // UNAVAILABLE) and the gRPC server shuts down. Returns when everything has stopped.
  void Shutdown(absl::Duration drain_timeout);
  // Cuts a Shutdown's drain short (a second signal).
  void StopDraining();
  // Blocks until Shutdown has finished.
  void Wait();
  // SIGHUP: reads the TLS files and the API keys file again. Each is validated before it replaces
  // what is in force; one that fails is logged and the old one stays. OK when everything
  // configured was reloaded, else the first failure.
  absl::Status Reload();

 private:
  explicit Server(const ServerOptions& options);
  absl::Status Load();
  absl::Status WarmUp();
  // Submits a tiny scoring pass and waits for it (up to `timeout`).
  absl::Status Probe(absl::Duration timeout);
  void ProbeLoop();
  void SetServing(bool serving);

  const ServerOptions options_;
  std::shared_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ServerMetrics metrics_;
  std::unique_ptr<Engine> engine_;
  CallTracker calls_;
  std::unique_ptr<AccessControl> access_;
  std::unique_ptr<ServingTls> tls_;
  ModelContext model_context_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<WorkerPool> session_workers_;
  std::unique_ptr<session::SessionManager> sessions_;
  CallParts parts_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<SessionsService> sessions_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  std::unique_ptr<OpenAiApi> openai_;  // with --http-port
  std::unique_ptr<HttpServer> http_;

  std::mutex mutex_;
  std::condition_variable changed_;
  bool shutting_down_ = false;
  bool shut_down_ = false;
  bool stop_draining_ = false;
  std::thread probe_thread_;
};

}  // namespace hgrn2::server

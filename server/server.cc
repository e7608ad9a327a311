// Server: start-up (load, warm up, bind), the periodic health probe, and reloads (the end: in
// server_shutdown.cc).
#include "server/server.h"

#include <pthread.h>

#include <chrono>
#include <climits>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/base/dtype.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/model_presets.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/core/log.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {
namespace {

constexpr const char* kInferenceService = "hgrn2.v1.Inference";

// "bf16", "f16", "f32" (the flags' spelling) to a DType.
std::optional<DType> FloatDType(absl::string_view name) {
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  if (name == "f32") return DType::kF32;
  return std::nullopt;
}

// The flags' spelling of a float DType.
std::string FlagName(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    default:
      return "f32";
  }
}

// The precision the server reports (ModelInfo, metrics, logs): the compute dtype the backend
// took ("f32" on the CPU, whatever --dtype said), or "fp8" where the weights are FP8.
std::string ServedDType(const Backend& backend, const WeightPrecision& precision) {
  return WeightPrecisionName(
      {.compute_dtype = backend.compute_dtype(), .fp8_weights = precision.fp8_weights});
}

absl::Status WithContext(const absl::Status& status, absl::string_view what) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

// Waits for a scoring request submitted with `done` as its on_done.
absl::Status AwaitScore(std::shared_ptr<PendingScore> pending, std::future<void> done,
                        absl::Duration timeout) {
  if (done.wait_for(absl::ToChronoNanoseconds(timeout)) != std::future_status::ready) {
    pending->Cancel();
    return absl::DeadlineExceededError(
        absl::StrCat("no answer within ", absl::FormatDuration(timeout)));
  }
  return pending->Wait().status();
}

}  // namespace

std::string Server::ServedModelName(const ServerOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  if (!options.preset.empty()) return absl::StrCat("random:", options.preset);
  std::filesystem::path path(options.model_dir);
  if (!path.has_filename()) path = path.parent_path();  // "models/hgrn2-demo/"
  return path.filename().string();
}

Server::Server(const ServerOptions& options)
    : options_(options), metrics_(ServedModelName(options), options.metrics_tenant_limit) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  HGRN2_RETURN_IF_ERROR(CheckLimits(options.limits));
  if (options.metrics_tenant_limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-tenant-limit must be >= 0, got ", options.metrics_tenant_limit));
  }
  if (options.metrics_tls && options.tls.cert_file.empty()) {
    return absl::InvalidArgumentError("--metrics-tls needs --tls-cert and --tls-key");
  }
  if (options.max_receive_message_bytes < 1 || options.max_streams_per_connection < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-message-bytes and --max-streams-per-connection must be >= 1, got ",
        options.max_receive_message_bytes, " and ", options.max_streams_per_connection));
  }
  std::unique_ptr<Server> server(new Server(options));
  // The certificates and keys are checked before the model loads: a mistake there fails fast.
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls.cert_file.empty() || !options.tls.key_file.empty()) {
    absl::StatusOr<std::unique_ptr<ServingTls>> tls = ServingTls::Create(options.tls);
    if (!tls.ok()) return tls.status();
    server->tls_ = *std::move(tls);
    credentials = server->tls_->credentials();
  } else if (!options.tls.client_ca_file.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  absl::StatusOr<std::unique_ptr<AccessControl>> access =
      AccessControl::Create(options.api_keys_file, &server->metrics_);
  if (!access.ok()) return access.status();
  server->access_ = *std::move(access);
  if (server->tls_ != nullptr) {
    LogInfo(absl::StrCat("TLS on the gRPC and HTTP ports with ", options.tls.cert_file,
                         options.tls.client_ca_file.empty()
                             ? std::string()
                             : absl::StrCat("; client certificates required, verified against ",
                                            options.tls.client_ca_file)));
  }
  if (server->access_->enabled()) {
    LogInfo(absl::StrCat("API keys from ", options.api_keys_file,
                         ": every Inference and Sessions call needs one"));
  }
  HGRN2_RETURN_IF_ERROR(server->Load());
  HGRN2_RETURN_IF_ERROR(server->WarmUp());

  if (options.metrics_port > 0) {
    const std::string& host = options.metrics_host.empty() ? options.host : options.metrics_host;
    std::function<bool(SSL_CTX&)> https;
    if (options.metrics_tls) {
      https = [tls = server->tls_.get()](SSL_CTX& ctx) { return tls->ConfigureHttps(ctx); };
    }
    HGRN2_RETURN_IF_ERROR(server->metrics_.Serve(host, options.metrics_port, std::move(https)));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.host, ":", options.port);
  builder.AddListeningPort(address, credentials, &server->port_);
  builder.RegisterService(server->inference_.get());
  if (server->sessions_service_ != nullptr)
    builder.RegisterService(server->sessions_service_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_streams_per_connection);
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->port_ == 0) {
    server->grpc_server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  if (server->openai_ != nullptr) {
    HttpServerOptions http{.host = options.host,
                           .port = options.http_port,
                           .threads = options.http_threads,
                           .max_body_bytes = options.max_receive_message_bytes,
                           .tls_cert_file = options.tls.cert_file,
                           .tls_key_file = options.tls.key_file,
                           .tls_client_ca_file = options.tls.client_ca_file};
    absl::StatusOr<std::unique_ptr<HttpServer>> started =
        HttpServer::Start(http, [api = server->openai_.get()](std::shared_ptr<HttpExchange> e) {
          api->Handle(std::move(e));
        });
    if (!started.ok()) return started.status();
    server->http_ = *std::move(started);
  }
  server->SetServing(true);
  if (options.health_check_interval > absl::ZeroDuration()) {
    server->probe_thread_ = std::thread([s = server.get()] { s->ProbeLoop(); });
    pthread_setname_np(server->probe_thread_.native_handle(), "hgrn2-probe");
  }
  return server;
}

absl::Status Server::Load() {
  CudaBackendOptions cuda;
  absl::StatusOr<WeightPrecision> precision = ParseWeightPrecision(options_.dtype);
  if (!precision.ok()) return WithContext(precision.status(), "--dtype");
  cuda.compute_dtype = precision->compute_dtype;
  const ModelLoadOptions load_options{.fp8_weights = precision->fp8_weights};
  HGRN2_ASSIGN_OR_RETURN(cuda.wait, GpuWaitNamed(options_.gpu_wait));
  const std::optional<DType> state_dtype = FloatDType(options_.state_dtype);
  if (!state_dtype || *state_dtype == DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state-dtype ", options_.state_dtype, ": expected f32 or bf16"));
  }
  if (options_.backend != nullptr) {
    backend_ = options_.backend;
  } else {
    absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(options_.device, cuda);
    if (!backend.ok()) return WithContext(backend.status(), "--device");
    backend_ = *std::move(backend);
  }

  const std::string model_name =
      options_.preset.empty() ? options_.model_dir : absl::StrCat("random:", options_.preset);
  if (!options_.preset.empty()) {
    absl::StatusOr<ModelConfig> config = ModelPreset(options_.preset);
    if (!config.ok()) return WithContext(config.status(), "--preset");
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::CreateRandom(*config, *backend_, kPresetSeed, load_options);
    if (!model.ok()) return WithContext(model.status(), "--preset");
    model_ = *std::move(model);
  } else {
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::Load(options_.model_dir, *backend_, load_options);
    if (!model.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model ", options_.model_dir, ": ", model.status().message()));
    }
    model_ = *std::move(model);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(options_.model_dir);
    if (tokenizer.ok()) {
      tokenizer_ = *std::move(tokenizer);
    } else if (!absl::IsNotFound(tokenizer.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer in ", options_.model_dir, ": ", tokenizer.status().message()));
    }
  }

  EngineOptions engine_options = options_.engine;
  engine_options.max_prompt_tokens = options_.limits.max_prompt_tokens;
  engine_options.state_dtype = *state_dtype;
  engine_options.on_step = [metrics = &metrics_](const StepReport& step) {
    metrics->RecordStep(step);
  };
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(*model_, engine_options);
  if (!engine.ok()) return WithContext(engine.status(), "engine");
  engine_ = *std::move(engine);
  metrics_.SetEngineStatsSource([engine = engine_.get()] { return engine->Stats(); });

  ServedModel served{.path = model_name,
                     .backend = std::string(backend_->name()),
                     .dtype = ServedDType(*backend_, *precision),
                     .state_dtype = FlagName(*state_dtype),
                     .fingerprint = model_->fingerprint().ToHex(),
                     .max_message_bytes = options_.max_receive_message_bytes,
                     .max_streams_per_connection = options_.max_streams_per_connection};
  metrics_.SetModelInfo(served.path, served.backend, served.dtype);
  workers_ = std::make_unique<WorkerPool>(options_.stream_threads, "hgrn2-stream");
  model_context_ = ModelContext{
      .config = &model_->config(), .tokenizer = tokenizer_.get(), .limits = options_.limits};
  parts_ = CallParts{.engine = engine_.get(),
                     .model = &model_context_,
                     .metrics = &metrics_,
                     .calls = &calls_,
                     .access = access_.get(),
                     .workers = workers_.get()};
  if (!options_.sessions.kinds.empty()) {
    absl::StatusOr<std::unique_ptr<session::SessionStore>> store =
        session::MakeSessionStore(options_.sessions);
    if (!store.ok()) return WithContext(store.status(), "--session-store");
    const session::SnapshotExpectation expected =
        session::SessionManager::ExpectationFor(*model_, *state_dtype);
    // Sessions load into page-locked memory lent by the engine, which the engine writes to the
    // device without a copy on its thread.
    sessions_ = std::make_unique<session::SessionManager>(
        *std::move(store), expected,
        engine_->MakeHostStatePool(session::SessionManager::kHostStatesForLoads));
    session_workers_ = std::make_unique<WorkerPool>(options_.session_threads, "hgrn2-session");
    parts_.session_workers = session_workers_.get();
    parts_.sessions = sessions_.get();
    sessions_service_ = std::make_unique<SessionsService>(
        parts_, session::SessionManager::MaxSnapshotBytes(expected));
    metrics_.SetSessionStatsSource([sessions = sessions_.get()] {
      return SessionMetrics{sessions->StoreStats(), sessions->Stats()};
    });
  }
  if (options_.http_port < 0 || options_.http_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http-port must be in [0, 65535], got ", options_.http_port));
  }
  if (options_.http_port > 0) {
    std::unique_ptr<ChatTemplate> chat;
    if (tokenizer_ != nullptr) {
      absl::StatusOr<std::unique_ptr<ChatTemplate>> loaded =
          ChatTemplate::Load(options_.model_dir, options_.chat_template_file, tokenizer_.get());
      if (!loaded.ok()) return loaded.status();
      chat = *std::move(loaded);
      LogInfo(absl::StrCat("chat template: ", chat->origin()));
    } else if (!options_.chat_template_file.empty()) {
      return absl::InvalidArgumentError(
          "--chat-template: the model has no tokenizer, so it serves no chat");
    }
    openai_ = std::make_unique<OpenAiApi>(parts_, ServedModelName(options_), served.fingerprint,
                                          std::move(chat));
  }
  inference_ = std::make_unique<InferenceService>(engine_options, std::move(served), parts_);
  const ModelConfig& c = model_->config();
  LogInfo(
      absl::StrCat("loaded ", model_name, ": ", c.num_layers, " layers, hidden ", c.hidden_size,
                   ", vocabulary ", c.vocab_size, ", ", c.num_parameters(), " parameters, on ",
                   backend_->name(), " (", served.dtype, "); ",
                   tokenizer_ ? tokenizer_->kind() : std::string("no tokenizer: token ids only")),
      {{"model", model_name},
       {"served_model_name", metrics_.served_model_name()},
       {"parameters", c.num_parameters()},
       {"backend", std::string(backend_->name())},
       {"dtype", served.dtype}});
  return absl::OkStatus();
}

absl::Status Server::WarmUp() {
  const absl::Time start = absl::Now();
  HGRN2_RETURN_IF_ERROR(Probe(options_.health_check_timeout));
  // A short generation: a decode step runs (and on the GPU, is recorded) before the first user.
  GenerationRequest request;
  request.prompt = {0, 0, 0};
  request.sampling.temperature = 0.0f;
  request.stopping.max_new_tokens = 2;
  request.stopping.ignore_eos = true;
  absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine_->Generate(request);
  if (!stream.ok()) return WithContext(stream.status(), "warm-up");
  const StreamUpdate end = (*stream)->Wait();
  if (!end.end->status.ok()) return WithContext(end.end->status, "warm-up generation");
  const absl::Duration took = absl::Now() - start;
  LogInfo(absl::StrCat("warm-up passed in ", absl::FormatDuration(took)), {{"seconds", took}});
  return absl::OkStatus();
}

absl::Status Server::Probe(absl::Duration timeout) {
  auto done = std::make_shared<std::promise<void>>();
  ScoreRequest request;
  request.tokens = {0, 0};
  request.priority = INT32_MAX;
  request.on_done = [done] { done->set_value(); };
  absl::StatusOr<std::shared_ptr<PendingScore>> pending = engine_->Score(std::move(request));
  if (!pending.ok()) return WithContext(pending.status(), "health probe");
  absl::Status status = AwaitScore(*pending, done->get_future(), timeout);
  return status.ok() ? status : WithContext(status, "health probe");
}

void Server::ProbeLoop() {
  bool serving = true;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (changed_.wait_for(lock, absl::ToChronoNanoseconds(options_.health_check_interval),
                            [&] { return shutting_down_; })) {
        return;
      }
    }
    const absl::Status probe = Probe(options_.health_check_timeout);
    if (probe.ok() != serving) {
      serving = probe.ok();
      if (serving) {
        LogInfo("health probe passed again: SERVING");
      } else {
        LogError(absl::StrCat("health probe failed, NOT_SERVING: ", probe.message()));
      }
      SetServing(serving);
    }
  }
}

void Server::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shutting_down_ || grpc_server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(kInferenceService, serving);
  if (openai_ != nullptr) openai_->SetServing(serving);
  metrics_.SetServing(serving);
}

absl::Status Server::Reload() {
  absl::Status first = absl::OkStatus();
  if (tls_ != nullptr) {
    absl::StatusOr<std::string> tls = tls_->Reload();
    if (tls.ok() && http_ != nullptr) {
      if (absl::Status http = http_->ReloadTls(); !http.ok()) tls = http;
    }
    if (tls.ok()) {
      LogInfo(absl::StrCat("TLS reloaded: ", *tls, " (served within ", ServingTls::kRefreshSeconds,
                           " s)"));
    } else {
      LogWarning(absl::StrCat("TLS reload refused, still serving the previous certificate: ",
                              tls.status().message()));
      first = tls.status();
    }
  }
  if (access_->enabled()) {
    absl::StatusOr<std::string> keys = access_->Reload();
    if (keys.ok()) {
      LogInfo(absl::StrCat("API keys reloaded: ", *keys));
    } else {
      LogWarning(absl::StrCat("API keys reload refused, the previous keys stay in force: ",
                              keys.status().message()));
      if (first.ok()) first = keys.status();
    }
  }
  if (tls_ == nullptr && !access_->enabled()) {
    LogWarning("reload: no TLS files or API keys to reload");
  }
  return first;
}

}  // namespace hgrn2::server

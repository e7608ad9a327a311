// hgrn2-server: read the flags (server/flags.h), start the server, reload its certificates and API
// keys on SIGHUP, and drain it on SIGTERM/SIGINT.
#include <signal.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpc/support/log.h"
#include "server/core/log.h"
#include "server/flags.h"
#include "server/options.h"
#include "server/server.h"

namespace {

using hgrn2::server::kExitUsage;

// gRPC's own log lines (errors by default; more with GRPC_VERBOSITY) go through the server's log,
// so that with --log-format json every line of standard error is JSON.
void LogFromGrpc(gpr_log_func_args* args) {
  const hgrn2::server::LogLevel level =
      args->severity == GPR_LOG_SEVERITY_ERROR  ? hgrn2::server::LogLevel::kError
      : args->severity == GPR_LOG_SEVERITY_INFO ? hgrn2::server::LogLevel::kInfo
                                                : hgrn2::server::LogLevel::kDebug;
  hgrn2::server::Log(level, args->message,
                     {{"source", "grpc"}, {"file", args->file}, {"line", args->line}});
}

// Blocks the shutdown signals and SIGHUP (reload) in every thread; the main thread takes them
// with sigwait.
sigset_t BlockHandledSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// Server::Start on its own thread while this one takes signals: a SIGTERM or SIGINT while the
// model loads ends the process at once (nothing is served or saved yet), rather than waiting for a
// load that may be slow or stuck. A SIGHUP meanwhile sets `reload_pending`.
absl::StatusOr<std::unique_ptr<hgrn2::server::Server>> StartUnlessStopped(
    const hgrn2::server::ServerOptions& options, const sigset_t& signals, bool& reload_pending) {
  std::future<absl::StatusOr<std::unique_ptr<hgrn2::server::Server>>> started =
      std::async(std::launch::async, [&options] { return hgrn2::server::Server::Start(options); });
  const timespec poll = {.tv_sec = 0, .tv_nsec = 100'000'000};
  while (started.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    const int signal_number = sigtimedwait(&signals, nullptr, &poll);
    if (signal_number == SIGHUP) {
      reload_pending = true;
    } else if (signal_number > 0) {
      hgrn2::server::LogWarning(absl::StrCat("got ", strsignal(signal_number),
                                             " while starting: exiting without serving"));
      std::_Exit(128 + signal_number);
    }
  }
  return started.get();
}

// The next SIGTERM or SIGINT; SIGHUPs before it run `on_reload`.
int AwaitShutdownSignal(const sigset_t& signals, const std::function<void()>& on_reload) {
  while (true) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) return signal_number;
    on_reload();
  }
}

}  // namespace

int main(int argc, char** argv) {
  using hgrn2::server::LogInfo;
  using hgrn2::server::LogWarning;
  hgrn2::server::ServerOptions options;
  if (std::optional<int> exit_code = hgrn2::server::ParseServerFlags(argc, argv, options)) {
    return *exit_code;
  }
  gpr_set_log_function(&LogFromGrpc);

  const sigset_t signals = BlockHandledSignals();
  bool reload_pending = false;
  absl::StatusOr<std::unique_ptr<hgrn2::server::Server>> server =
      StartUnlessStopped(options, signals, reload_pending);
  if (!server.ok()) {
    hgrn2::server::LogError(server.status().message());
    return kExitUsage;
  }
  const std::string address = absl::StrCat(options.host, ":", (*server)->port());
  const std::string metrics_address =
      (*server)->metrics_port() > 0
          ? absl::StrCat(options.metrics_host.empty() ? options.host : options.metrics_host, ":",
                         (*server)->metrics_port())
          : std::string();
  // Tests and scripts wait for this line: "serving MODEL on HOST:PORT[, metrics on ...]".
  LogInfo(absl::StrCat("serving ",
                       options.preset.empty() ? options.model_dir : "preset " + options.preset,
                       " on ", address,
                       metrics_address.empty()
                           ? std::string()
                           : absl::StrCat(", metrics on ", options.metrics_tls ? "https://" : "",
                                          metrics_address, "/metrics")),
          {{"model_name", hgrn2::server::Server::ServedModelName(options)},
           {"address", address},
           {"metrics_address", metrics_address}});

  if ((*server)->http_port() > 0) {
    LogInfo(
        absl::StrCat("OpenAI-compatible HTTP API on ", options.host, ":", (*server)->http_port()));
  }
  if (reload_pending) {
    LogInfo("got SIGHUP while starting: reloading the TLS files and API keys");
    (*server)->Reload().IgnoreError();
  }
  const int signal_number = AwaitShutdownSignal(signals, [&] {
    LogInfo("got SIGHUP: reloading the TLS files and API keys");
    (*server)->Reload().IgnoreError();  // logged, with what stays in force
  });
  LogInfo(absl::StrCat("got ", strsignal(signal_number), ": shutting down"));
  std::thread drain([&] { (*server)->Shutdown(options.drain_timeout); });
  // A second signal cuts the drain short.
  std::thread second([&] {
    AwaitShutdownSignal(signals, [&] { (*server)->Reload().IgnoreError(); });
    LogWarning("second signal: ending the drain now");
    (*server)->StopDraining();
  });
  drain.join();
  second.detach();  // still waiting for a signal that need not come; the process ends
  server->reset();
  return 0;
}

// HttpServer: the HTTP/1.1 transport of the OpenAI-compatible API (Boost.Beast on Boost.Asio):
// listening, TLS, keep-alive connections, request parsing with size limits, whole responses and
// chunked event streams with one write in flight per stream, and noticing clients that go away.
// What a request means is the handler's business (openai_api.h).
//
// Why Beast on Asio: a few threads run every connection asynchronously, so 1,024 streams cost
// 1,024 small objects, not 1,024 threads (cpp-httplib, which serves /metrics, runs a thread per
// connection and would need a thread per open stream); both are in Debian (libboost-dev 1.74).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/http/http_exchange.h"

namespace hgrn2::server {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;  // 0: any free port (HttpServer::port() tells which)
  int threads = 2;  // I/O threads shared by every connection
  // Largest request body; a larger one is answered 413 before it is read.
  int64_t max_body_bytes = 16 << 20;
  // A connection with no request in progress is closed after this long without one (also bounds
  // how long a request's header and body may take to arrive).
  absl::Duration idle_timeout = absl::Seconds(75);
  // A client that takes longer than this to take one write of a stream is cut off.
  absl::Duration write_timeout = absl::Seconds(60);
  // TLS: PEM certificate chain and key (empty: plaintext); with a client CA, client certificates
  // are required and verified.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// Thread-safety: Start once, then Stop from any thread; the handler runs on the I/O threads.
class HttpServer {
 public:
  using Handler = std::function<void(std::shared_ptr<HttpExchange>)>;
  // Binds and starts the I/O threads. Unavailable naming the address when it cannot bind;
  // InvalidArgument naming the file when TLS files cannot be loaded.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           Handler handler);
  // Stop().
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Reads the TLS files again (after ServingTls has checked them): new connections use them.
  absl::Status ReloadTls();
  // Stops accepting; gives the answers in progress up to `grace` to finish (their exchanges let
  // go); then closes every connection and joins the I/O threads. Idempotent. Exchanges still held
  // elsewhere stay valid: their calls go nowhere.
  void Stop(absl::Duration grace = absl::ZeroDuration());

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace hgrn2::server

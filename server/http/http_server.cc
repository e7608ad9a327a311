// HttpServer: listening, TLS contexts, the I/O threads and the graceful stop (see http_server.h);
// the connections themselves are in http_connection.cc.
#include "server/http/http_server.h"

#include <pthread.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/error.hpp>
#include <list>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/http/http_connection.h"

namespace hgrn2::server {
namespace {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using http_connection::ConnectionBase;
using http_connection::Shared;

absl::StatusOr<std::shared_ptr<ssl::context>> MakeTlsContext(const HttpServerOptions& options) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  beast::error_code ec;
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                       ec);
  context->use_certificate_chain_file(options.tls_cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", options.tls_cert_file, ": ", ec.message()));
  }
  context->use_private_key_file(options.tls_key_file, ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", options.tls_key_file, ": ", ec.message()));
  }
  if (!options.tls_client_ca_file.empty()) {
    context->load_verify_file(options.tls_client_ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca ", options.tls_client_ca_file, ": ", ec.message()));
    }
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> shared;
  std::shared_ptr<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::once_flag stopped;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              Handler handler) {
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http-threads must be >= 1, got ", options.threads));
  }
  auto impl = std::make_unique<Impl>();
  impl->shared = std::make_shared<Shared>(options, std::move(handler));
  Shared& shared = *impl->shared;
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::shared_ptr<ssl::context>> tls = MakeTlsContext(options);
    if (!tls.ok()) return tls.status();
    shared.tls = *std::move(tls);
  }
  const std::string address = absl::StrCat(options.host, ":", options.port);
  beast::error_code ec;
  const net::ip::address ip = net::ip::make_address(options.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--host ", options.host, ": not an IP"));
  impl->acceptor = std::make_shared<tcp::acceptor>(net::make_strand(shared.io));
  tcp::acceptor& acceptor = *impl->acceptor;
  const tcp::endpoint endpoint(ip, static_cast<uint16_t>(options.port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("HTTP: cannot listen on ", address, ": ", ec.message()));
  }
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(impl)));
  server->port_ = acceptor.local_endpoint().port();
  http_connection::Accept(server->impl_->shared, server->impl_->acceptor);
  for (int i = 0; i < options.threads; ++i) {
    // Each thread runs until there is no work: Stop closes the acceptor and the connections.
    server->impl_->threads.emplace_back([shared = server->impl_->shared] { shared->io.run(); });
    pthread_setname_np(server->impl_->threads.back().native_handle(), "hgrn2-http");
  }
  return server;
}

absl::Status HttpServer::ReloadTls() {
  Shared& shared = *impl_->shared;
  if (shared.options.tls_cert_file.empty()) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<ssl::context>> tls = MakeTlsContext(shared.options);
  if (!tls.ok()) return tls.status();
  std::lock_guard<std::mutex> lock(shared.mutex);
  shared.tls = *std::move(tls);
  return absl::OkStatus();
}

void HttpServer::Stop(absl::Duration grace) {
  std::call_once(impl_->stopped, [this, grace] {
    Shared& shared = *impl_->shared;
    std::list<std::weak_ptr<ConnectionBase>> connections;
    {
      std::unique_lock<std::mutex> lock(shared.mutex);
      shared.stopped = true;
      net::post(impl_->acceptor->get_executor(), [acceptor = impl_->acceptor] {
        beast::error_code ignored;
        acceptor->close(ignored);
      });
      // Answers in progress get `grace` to go out (the engine has ended their requests).
      shared.exchanges_done.wait_for(lock, absl::ToChronoNanoseconds(grace),
                                     [&] { return shared.live_exchanges == 0; });
      connections.swap(shared.connections);
    }
    for (const auto& weak : connections) {
      if (std::shared_ptr<ConnectionBase> connection = weak.lock()) connection->Close();
    }
    // With the acceptor and every socket closed, the threads run out of work and return.
    for (std::thread& thread : impl_->threads) thread.join();
    impl_->threads.clear();
    shared.ClosePosts();
  });
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace hgrn2::server

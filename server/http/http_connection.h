// The HTTP server's connections (internal to server/http/): their shared state and the accept loop.
//
// Each connection runs on its own strand. It alternates between reading a request and answering
// it; while an answer is in progress it already reads the next request's header, which both takes
// a pipelined request and tells when the client closes (the read fails): the exchange's on_gone
// then cancels its work. Writes are raw bytes (http_wire.h: status line, header, chunked framing),
// one at a time, so a stream's header and its first events go out in one write.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "server/http/http_server.h"

namespace hgrn2::server::http_connection {

class ConnectionBase : public std::enable_shared_from_this<ConnectionBase> {
 public:
  virtual ~ConnectionBase() = default;
  // Any thread: closes the socket on the connection's strand.
  virtual void Close() = 0;
};

// The connections' shared state: what they serve with, and the list Stop closes.
struct Shared {
  explicit Shared(HttpServerOptions o, HttpServer::Handler h)
      : options(std::move(o)), handler(std::move(h)) {}
  const HttpServerOptions options;
  const HttpServer::Handler handler;
  boost::asio::io_context io;
  std::mutex mutex;
  std::condition_variable exchanges_done;
  std::list<std::weak_ptr<ConnectionBase>> connections;  // guarded by mutex
  bool stopped = false;                                  // guarded by mutex
  std::shared_ptr<boost::asio::ssl::context> tls;        // guarded by mutex; null: plaintext
  int64_t live_exchanges = 0;                            // guarded by mutex
  // Set once the server's threads have returned and the io_context's queue has been run out:
  // from then on Post drops its handler. Without it, a handler posted by an exchange the engine
  // still held (holding its connection, and so this io_context) would wait in the queue forever:
  // a cycle, never freed.
  std::shared_mutex post_mutex;
  bool posts_closed = false;  // guarded by post_mutex

  // boost::asio::post, unless posts are closed (the handler is then dropped; its connection is
  // closed and nothing runs the io_context any more).
  template <class Executor, class Function>
  void Post(const Executor& executor, Function&& function) {
    std::shared_lock<std::shared_mutex> lock(post_mutex);
    if (!posts_closed) boost::asio::post(executor, std::forward<Function>(function));
  }
  // After the threads have returned: closes posts and runs what was queued meanwhile (every
  // connection is closed by then, so each handler returns at once).
  void ClosePosts() {
    {
      std::unique_lock<std::shared_mutex> lock(post_mutex);
      posts_closed = true;
    }
    io.restart();
    while (io.poll() > 0) {
    }
  }

  void ExchangeBegun() {
    std::lock_guard<std::mutex> lock(mutex);
    ++live_exchanges;
  }
  void ExchangeEnded() {
    std::lock_guard<std::mutex> lock(mutex);
    if (--live_exchanges == 0) exchanges_done.notify_all();
  }
};

// Accepts connections on `acceptor` (on shared's io_context) until it closes, each listed in
// shared.connections and served on its own strand.
void Accept(const std::shared_ptr<Shared>& shared,
            const std::shared_ptr<boost::asio::ip::tcp::acceptor>& acceptor);

}  // namespace hgrn2::server::http_connection

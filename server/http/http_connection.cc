// The HTTP connections: Beast/Asio, each on its own strand (see http_connection.h).
#include "server/http/http_connection.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/http/http_wire.h"

namespace hgrn2::server::http_connection {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using http_wire::Headers;

template <class Stream>
class Connection;

// One request on a connection; the API holds it until it has answered. It keeps the connection
// alive meanwhile; the connection knows it only weakly.
template <class Stream>
class Exchange : public HttpExchange, public std::enable_shared_from_this<Exchange<Stream>> {
 public:
  Exchange(std::shared_ptr<Connection<Stream>> connection, HttpRequest request, uint64_t id)
      : connection_(std::move(connection)), request_(std::move(request)), id_(id) {
    connection_->shared().ExchangeBegun();
  }
  ~Exchange() override {
    // An exchange let go unanswered would leave its client waiting: the connection closes.
    connection_->shared().Post(connection_->strand(),
                               [c = connection_, id = id_] { c->Abandoned(id); });
    connection_->shared().ExchangeEnded();
  }
  const HttpRequest& request() const override { return request_; }
  void Respond(HttpResponse response) override {
    connection_->shared().Post(connection_->strand(),
                               [self = this->shared_from_this(), r = std::move(response)] {
                                 self->connection_->DoRespond(self->id_, r);
                               });
  }
  void Send(std::string events, std::function<void(bool)> done, Headers extra) override {
    connection_->shared().Post(
        connection_->strand(), [self = this->shared_from_this(), e = std::move(events),
                                d = std::move(done), h = std::move(extra)]() mutable {
          self->connection_->DoSend(self->id_, std::move(e), std::move(d), h);
        });
  }
  void End() override {
    connection_->shared().Post(connection_->strand(), [self = this->shared_from_this()] {
      self->connection_->DoEnd(self->id_);
    });
  }
  void OnClientGone(std::function<void()> on_gone) override {
    connection_->shared().Post(connection_->strand(),
                               [self = this->shared_from_this(), g = std::move(on_gone)] {
                                 self->on_gone_ = g;
                                 if (self->connection_->ClientGone(self->id_)) self->NotifyGone();
                               });
  }
  // On the strand.
  void NotifyGone() {
    if (gone_notified_ || !on_gone_) return;
    gone_notified_ = true;
    std::function<void()> on_gone = std::move(on_gone_);
    on_gone();
  }

 private:
  const std::shared_ptr<Connection<Stream>> connection_;
  const HttpRequest request_;
  const uint64_t id_;
  std::function<void()> on_gone_;  // strand only
  bool gone_notified_ = false;     // strand only
};

// Stream: tcp::socket or ssl::stream<tcp::socket>, made on a strand of the io_context.
template <class Stream>
class Connection : public ConnectionBase {
 public:
  using Strand = net::strand<net::io_context::executor_type>;

  // `stream_args` make the Stream: the accepted socket, and for TLS the context (held here too).
  template <class... StreamArgs>
  Connection(std::shared_ptr<Shared> shared, std::shared_ptr<ssl::context> tls, Strand strand,
             StreamArgs&&... stream_args)
      : shared_(std::move(shared)),
        tls_(std::move(tls)),
        strand_(strand),
        stream_(std::forward<StreamArgs>(stream_args)...),
        timer_(strand),
        peer_(http_wire::PeerOf(Socket())) {}

  Strand strand() const { return strand_; }
  Shared& shared() const { return *shared_; }

  // The first step: the TLS handshake, or straight to reading.
  void Begin() {
    net::dispatch(strand_, [self = Self()] {
      if constexpr (kTls) {
        self->ArmTimer(self->shared_->options.idle_timeout);
        self->stream_.async_handshake(ssl::stream_base::server, [self](beast::error_code ec) {
          self->DisarmTimer();
          if (ec) return self->CloseNow();
          self->ReadHeader();
        });
      } else {
        self->ReadHeader();
      }
    });
  }

  void Close() override {
    shared_->Post(strand_, [self = Self()] { self->CloseNow(); });
  }

  // Exchange entry points, on the strand. `id` names the exchange; a stale one is ignored.
  void DoRespond(uint64_t id, const HttpResponse& response) {
    if (id != exchange_id_ || answered_) return;
    answered_ = true;
    if (closed_) return FinishExchange();
    Write(http_wire::ResponseBytes(response, keep_alive_),
          [self = Self()](bool) { self->FinishExchange(); });
  }

  void DoSend(uint64_t id, std::string events, std::function<void(bool)> done,
              const Headers& extra) {
    if (id != exchange_id_ || answered_ || closed_) return done(false);
    std::string bytes;
    if (!stream_started_) {
      stream_started_ = true;
      // HTTP/1.0 has no chunked encoding: the body runs until the connection closes.
      if (!chunked_) keep_alive_ = false;
      bytes = http_wire::StreamHeadBytes(extra, chunked_, keep_alive_);
    }
    bytes += http_wire::StreamChunkBytes(events, chunked_);
    Write(std::move(bytes), std::move(done));
  }

  void DoEnd(uint64_t id) {
    if (id != exchange_id_ || answered_) return;
    answered_ = true;
    if (closed_ || !chunked_ || !stream_started_) {
      if (!stream_started_) keep_alive_ = false;  // an empty stream: nothing sensible was sent
      return FinishExchange();
    }
    Write(http_wire::kLastChunk, [self = Self()](bool) { self->FinishExchange(); });
  }

  // Whether the client of exchange `id` is gone already.
  bool ClientGone(uint64_t id) const { return id == exchange_id_ && (gone_ || closed_); }

  void Abandoned(uint64_t id) {
    if (id != exchange_id_ || answered_) return;
    CloseNow();
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  std::shared_ptr<Connection> Self() {
    return std::static_pointer_cast<Connection>(this->shared_from_this());
  }
  tcp::socket& Socket() {
    if constexpr (kTls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  void ArmTimer(absl::Duration after) {
    ++timer_generation_;
    timer_.expires_after(absl::ToChronoNanoseconds(after));
    timer_.async_wait([self = Self(), generation = timer_generation_](beast::error_code ec) {
      if (!ec && generation == self->timer_generation_) self->CloseNow();
    });
  }
  void DisarmTimer() {
    ++timer_generation_;
    timer_.cancel();
  }

  void CloseNow() {
    if (closed_) return;
    closed_ = true;
    DisarmTimer();
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
    NotifyGone();
  }

  void NotifyGone() {
    gone_ = true;
    if (std::shared_ptr<Exchange<Stream>> exchange = exchange_.lock()) exchange->NotifyGone();
  }

  // Reads the next request's header; while an exchange runs, this read also watches for the
  // client going away.
  void ReadHeader() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(http_wire::kMaxHeaderBytes);
    parser_->body_limit(static_cast<uint64_t>(shared_->options.max_body_bytes));
    reading_ = true;
    if (exchange_.expired()) ArmTimer(shared_->options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](beast::error_code ec, size_t) {
                              self->reading_ = false;
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) {
      // The client closed (or broke) the connection, or sent something that is not HTTP.
      if (!exchange_.expired() || closed_ || IsDisconnect(ec)) return CloseWhenIdle();
      return RefuseAndClose(ec);
    }
    header_ready_ = true;
    if (exchange_.expired()) ReadBody();  // else: after the exchange in progress
  }

  static bool IsDisconnect(beast::error_code ec) {
    return ec == http::error::end_of_stream || ec == net::error::eof ||
           ec == net::error::connection_reset || ec == net::error::operation_aborted ||
           ec == net::ssl::error::stream_truncated || ec == net::error::broken_pipe;
  }

  // The client is gone while an exchange may still be running: tell it; close once it is done.
  void CloseWhenIdle() {
    NotifyGone();
    if (exchange_.expired() && !writing_) CloseNow();
  }

  void ReadBody() {
    header_ready_ = false;
    http::request_parser<http::string_body>& parser = *parser_;
    if (parser.content_length() &&
        *parser.content_length() > static_cast<uint64_t>(shared_->options.max_body_bytes)) {
      return RefuseAndClose(http::error::body_limit);
    }
    if (absl::EqualsIgnoreCase(std::string(parser.get()[http::field::expect]), "100-continue")) {
      // The client waits for this before sending the body.
      Write(http_wire::kContinue, [self = Self()](bool ok) {
        if (ok) self->ReadBodyNow();
      });
      return;
    }
    ReadBodyNow();
  }

  void ReadBodyNow() {
    if (closed_) return;
    reading_ = true;
    ArmTimer(shared_->options.idle_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = Self()](beast::error_code ec, size_t) {
      self->reading_ = false;
      self->DisarmTimer();
      if (ec) {
        if (IsDisconnect(ec)) return self->CloseNow();
        return self->RefuseAndClose(ec);
      }
      self->Dispatch();
    });
  }

  // A request the transport cannot take: an error in OpenAI's shape, then close.
  void RefuseAndClose(beast::error_code ec) {
    keep_alive_ = false;
    Write(http_wire::RefusalBytes(ec, shared_->options.max_body_bytes),
          [self = Self()](bool) { self->CloseNow(); });
  }

  void Dispatch() {
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    HttpRequest request = http_wire::ToHttpRequest(message, peer_);
    keep_alive_ = message.keep_alive();
    chunked_ = message.version() >= 11;
    answered_ = false;
    stream_started_ = false;
    gone_ = false;
    auto exchange = std::make_shared<Exchange<Stream>>(Self(), std::move(request), ++exchange_id_);
    exchange_ = exchange;
    // The next request's header: a pipelined request, or the news that the client left.
    ReadHeader();
    shared_->handler(std::move(exchange));
  }

  void FinishExchange() {
    exchange_.reset();
    if (closed_) return;
    if (!keep_alive_ || gone_) return CloseNow();
    if (header_ready_) return ReadBody();
    if (reading_) {
      ArmTimer(shared_->options.idle_timeout);
    } else {
      ReadHeader();
    }
  }

  // One write at a time (the exchange's contract), bounded by the write timeout.
  void Write(std::string bytes, std::function<void(bool)> done) {
    if (closed_) return done(false);
    write_buffer_ = std::move(bytes);
    writing_ = true;
    ArmTimer(shared_->options.write_timeout);
    net::async_write(stream_, net::buffer(write_buffer_),
                     [self = Self(), done = std::move(done)](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       self->DisarmTimer();
                       if (ec) {
                         self->CloseNow();
                         return done(false);
                       }
                       done(true);
                     });
  }

  const std::shared_ptr<Shared> shared_;     // keeps the io_context alive as long as the socket
  const std::shared_ptr<ssl::context> tls_;  // outlives the stream made from it
  const Strand strand_;
  Stream stream_;
  net::steady_timer timer_;
  const std::string peer_;

  // Strand only.
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string write_buffer_;
  uint64_t timer_generation_ = 0;
  std::weak_ptr<Exchange<Stream>> exchange_;  // the request being answered
  uint64_t exchange_id_ = 0;
  bool reading_ = false;         // a read is outstanding
  bool header_ready_ = false;    // the next request's header is read, its body not yet
  bool writing_ = false;         // a write is outstanding
  bool answered_ = true;         // the current exchange has answered (or there is none)
  bool stream_started_ = false;  // its event stream's header is out
  bool keep_alive_ = true;
  bool chunked_ = true;
  bool gone_ = false;  // the client closed or the connection broke
  bool closed_ = false;
};

}  // namespace

void Accept(const std::shared_ptr<Shared>& shared, const std::shared_ptr<tcp::acceptor>& acceptor) {
  auto strand = net::make_strand(shared->io);
  acceptor->async_accept(
      strand, [shared, acceptor, strand](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
        if (!ec) {
          beast::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          std::shared_ptr<ConnectionBase> connection;
          std::function<void()> begin;
          {
            // Listed under the same lock that Stop takes, so Stop closes every connection it let
            // in.
            std::lock_guard<std::mutex> lock(shared->mutex);
            if (shared->stopped) return;
            if (shared->tls != nullptr) {
              auto c = std::make_shared<Connection<ssl::stream<tcp::socket>>>(
                  shared, shared->tls, strand, std::move(socket), *shared->tls);
              begin = [c] { c->Begin(); };
              connection = c;
            } else {
              auto c = std::make_shared<Connection<tcp::socket>>(shared, nullptr, strand,
                                                                 std::move(socket));
              begin = [c] { c->Begin(); };
              connection = c;
            }
            // Forget closed connections as new ones come, so the list stays as long as the open
            // ones.
            shared->connections.remove_if([](const auto& weak) { return weak.expired(); });
            shared->connections.push_back(connection);
          }
          begin();
        }
        Accept(shared, acceptor);
      });
}

}  // namespace hgrn2::server::http_connection

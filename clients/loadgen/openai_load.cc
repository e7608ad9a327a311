// OpenAiClient: streaming completions over keep-alive HTTP/1.1 connections (see openai_load.h).
#include "clients/loadgen/openai_load.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hgrn2::loadgen {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

}  // namespace

struct OpenAiClient::Impl {
  net::io_context io;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  tcp::endpoint endpoint;
  std::string host;  // the Host header
  std::string api_key;
  std::mutex mutex;
  std::vector<std::unique_ptr<tcp::socket>> idle;  // keep-alive connections, guarded by mutex

  std::unique_ptr<tcp::socket> TakeIdle() {
    std::lock_guard<std::mutex> lock(mutex);
    if (idle.empty()) return nullptr;
    std::unique_ptr<tcp::socket> socket = std::move(idle.back());
    idle.pop_back();
    return socket;
  }
  void GiveBack(std::unique_ptr<tcp::socket> socket) {
    std::lock_guard<std::mutex> lock(mutex);
    idle.push_back(std::move(socket));
  }
  std::string RequestHead(const std::string& method, const std::string& path, size_t length,
                          bool events) const {
    std::string head = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: ", host,
                                    "\r\nContent-Type: application/json\r\n");
    if (events) head += "Accept: text/event-stream\r\n";
    if (!api_key.empty()) absl::StrAppend(&head, "Authorization: Bearer ", api_key, "\r\n");
    absl::StrAppend(&head, "Content-Length: ", length, "\r\n\r\n");
    return head;
  }
};

namespace {

// One streaming completion; owned by its pending operations.
class StreamCall : public std::enable_shared_from_this<StreamCall> {
 public:
  StreamCall(OpenAiClient* client, OpenAiClient::Impl& impl, std::string body, CallRecord record,
             std::function<void(CallRecord)> done)
      : impl_(impl), body_(std::move(body)), record_(std::move(record)), done_(std::move(done)) {
    static_cast<void>(client);
  }

  void Start() {
    record_.start = Clock::now();
    socket_ = impl_.TakeIdle();
    if (socket_ != nullptr) {
      reused_ = true;
      return Write();
    }
    Connect();
  }

 private:
  void Connect() {
    reused_ = false;
    socket_ = std::make_unique<tcp::socket>(net::make_strand(impl_.io));
    socket_->async_connect(impl_.endpoint, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return self->Fail("CONNECTION");
      beast::error_code ignored;
      self->socket_->set_option(tcp::no_delay(true), ignored);
      self->Write();
    });
  }

  void Write() {
    request_ = impl_.RequestHead("POST", "/v1/completions", body_.size(), true) + body_;
    net::async_write(*socket_, net::buffer(request_),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->RetryOrFail();
                       self->ReadHeader();
                     });
  }

  // A kept-alive connection the server has closed meanwhile: once more on a new one.
  void RetryOrFail() {
    if (reused_ && !got_bytes_) return Connect();
    Fail("CONNECTION");
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->body_limit(boost::none);
    buffer_.clear();
    http::async_read_header(*socket_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->RetryOrFail();
                              self->got_bytes_ = true;
                              self->status_ = self->parser_->get().result_int();
                              self->ReadBody();
                            });
  }

  void ReadBody() {
    if (parser_->is_done()) return Done();
    parser_->get().body().data = chunk_;
    parser_->get().body().size = sizeof(chunk_);
    http::async_read_some(
        *socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec == http::error::need_buffer) ec = {};
          if (ec) return self->Fail("CONNECTION");
          const size_t got = sizeof(self->chunk_) - self->parser_->get().body().size;
          self->OnData(std::string_view(self->chunk_, got));
          self->ReadBody();
        });
  }

  void OnData(std::string_view data) {
    if (status_ != 200) {
      error_body_.append(data);
      return;
    }
    events_.append(data);
    const Clock::time_point now = Clock::now();
    size_t end;
    while ((end = events_.find("\n\n")) != std::string::npos) {
      const std::string event = events_.substr(0, end);
      events_.erase(0, end + 2);
      for (absl::string_view line : absl::StrSplit(event, '\n')) {
        if (!absl::ConsumePrefix(&line, "data: ")) continue;
        if (line == "[DONE]") {
          saw_done_ = true;
          continue;
        }
        const nlohmann::json chunk = nlohmann::json::parse(line, nullptr, false);
        if (chunk.is_discarded()) continue;
        if (chunk.contains("error")) {
          stream_error_ = true;
          continue;
        }
        const auto usage = chunk.find("usage");
        if (usage != chunk.end() && usage->is_object()) {
          const int64_t completion = usage->value("completion_tokens", int64_t{0});
          record_.prompt_tokens = usage->value("prompt_tokens", int64_t{0});
          record_.AddTokens(completion - record_.generated_tokens, now);
        }
      }
    }
  }

  void Done() {
    record_.end = Clock::now();
    if (status_ != 200) {
      record_.error = absl::StrCat("HTTP_", status_);
    } else if (stream_error_ || !saw_done_) {
      record_.error = "STREAM_ERROR";
    }
    if (parser_->keep_alive()) impl_.GiveBack(std::move(socket_));
    done_(std::move(record_));
  }

  void Fail(const char* error) {
    record_.end = Clock::now();
    record_.error = error;
    done_(std::move(record_));
  }

  OpenAiClient::Impl& impl_;
  const std::string body_;
  CallRecord record_;
  const std::function<void(CallRecord)> done_;
  std::unique_ptr<tcp::socket> socket_;
  std::string request_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char chunk_[16 << 10];
  std::string events_, error_body_;
  unsigned status_ = 0;
  bool reused_ = false, got_bytes_ = false, saw_done_ = false, stream_error_ = false;
};

}  // namespace

OpenAiClient::OpenAiClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<OpenAiClient>> OpenAiClient::Create(const std::string& addr,
                                                                   const std::string& api_key,
                                                                   int threads) {
  const size_t colon = addr.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(addr.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("--addr: expected HOST:PORT, got ", addr));
  }
  auto impl = std::make_unique<Impl>();
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  tcp::resolver resolver(impl->io);
  beast::error_code ec;
  const auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", ec.message()));
  }
  impl->endpoint = results.begin()->endpoint();
  impl->host = addr;
  impl->api_key = api_key;
  impl->work.emplace(impl->io.get_executor());
  for (int i = 0; i < threads; ++i) impl->threads.emplace_back([io = &impl->io] { io->run(); });
  return std::unique_ptr<OpenAiClient>(new OpenAiClient(std::move(impl)));
}

OpenAiClient::~OpenAiClient() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    for (auto& socket : impl_->idle) {
      beast::error_code ignored;
      socket->close(ignored);
    }
  }
  impl_->work.reset();
  impl_->io.stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->idle.clear();
}

absl::StatusOr<nlohmann::json> OpenAiClient::Call(const std::string& method,
                                                  const std::string& path,
                                                  const std::string& body) {
  net::io_context io;
  tcp::socket socket(io);
  beast::error_code ec;
  socket.connect(impl_->endpoint, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(method, " ", path, ": cannot connect to ", impl_->host, ": ", ec.message()));
  }
  const std::string request = impl_->RequestHead(method, path, body.size(), false) + body;
  net::write(socket, net::buffer(request), ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  if (!ec) http::read(socket, buffer, response, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(method, " ", path, ": ", ec.message()));
  }
  if (response.result_int() != 200) {
    return absl::UnavailableError(
        absl::StrCat(method, " ", path, ": HTTP ", response.result_int(), ": ", response.body()));
  }
  nlohmann::json out = nlohmann::json::parse(response.body(), nullptr, false);
  if (out.is_discarded()) {
    return absl::UnavailableError(absl::StrCat(method, " ", path, ": not JSON"));
  }
  return out;
}

void OpenAiClient::Stream(std::string body, CallRecord record,
                          std::function<void(CallRecord)> done) {
  auto call = std::make_shared<StreamCall>(this, *impl_, std::move(body), std::move(record),
                                           std::move(done));
  net::post(impl_->io, [call] { call->Start(); });
}

}  // namespace hgrn2::loadgen

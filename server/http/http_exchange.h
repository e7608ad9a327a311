// HttpExchange: one HTTP request and its answer, as the HTTP transport (http_server.h) hands it
// to the API (openai_api.h): the request's parts, a whole response or a stream of server-sent
// events, and the news that the client went away. No Beast or Asio types.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hgrn2::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query
  std::string body;
  std::optional<std::string> authorization;  // the Authorization header as sent
  std::string request_id;                    // X-Request-Id, or empty
  std::string traceparent;                   // W3C traceparent, or empty
  std::string peer;                          // "ipv4:127.0.0.1:5555", as gRPC spells a peer
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // beyond Content-Type and length
};

// Thread-safety: every method may be called from any thread; the transport runs the work on the
// connection's own strand. Callbacks run there too, and must not block.
//
// An exchange is answered exactly once: by Respond, or by an event stream (Send ... then End).
// The connection reads its next request only after that.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;

  // The whole answer.
  virtual void Respond(HttpResponse response) = 0;

  // A text/event-stream answer (status 200, chunked): the header goes out with the first Send.
  // `events` are whole SSE events ("data: ...\n\n", one or more); `done(ok)` is called once the
  // bytes are written (ok) or could not be (the client is gone: false). One Send at a time: the
  // caller waits for `done` before the next, so a slow reader holds back only its own stream.
  // `extra_headers` are sent with the header (first Send only).
  virtual void Send(std::string events, std::function<void(bool ok)> done,
                    std::vector<std::pair<std::string, std::string>> extra_headers = {}) = 0;
  // Ends an event stream (after the last Send's done).
  virtual void End() = 0;

  // `on_gone` is called once, on the connection's strand, if the client closes its connection
  // (or it breaks) before the answer is complete; at once if that already happened. Set once.
  virtual void OnClientGone(std::function<void()> on_gone) = 0;
};

}  // namespace hgrn2::server

// The HTTP/1.1 bytes of the connections and their requests (see http_wire.h).
#include "server/http/http_wire.h"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hgrn2::server::http_wire {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string StatusLine(int status) {
  const beast::string_view reason = http::obsolete_reason(static_cast<http::status>(status));
  return absl::StrCat("HTTP/1.1 ", status, " ", absl::string_view(reason.data(), reason.size()),
                      "\r\n");
}

std::string HeaderLines(const Headers& headers) {
  std::string out;
  for (const auto& [name, value] : headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  return out;
}

}  // namespace

std::string PeerOf(const tcp::socket& socket) {
  beast::error_code ec;
  const tcp::endpoint remote = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  const net::ip::address address = remote.address();
  return absl::StrCat(address.is_v4() ? "ipv4:" : "ipv6:",
                      address.is_v4() ? address.to_string() : "[" + address.to_string() + "]", ":",
                      remote.port());
}

std::string ResponseBytes(const HttpResponse& response, bool keep_alive) {
  Headers headers = {{"Content-Type", response.content_type},
                     {"Content-Length", absl::StrCat(response.body.size())}};
  headers.insert(headers.end(), response.headers.begin(), response.headers.end());
  headers.emplace_back("Connection", keep_alive ? "keep-alive" : "close");
  return absl::StrCat(StatusLine(response.status), HeaderLines(headers), "\r\n", response.body);
}

std::string StreamHeadBytes(const Headers& extra, bool chunked, bool keep_alive) {
  Headers headers = {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}};
  if (chunked) headers.emplace_back("Transfer-Encoding", "chunked");
  headers.insert(headers.end(), extra.begin(), extra.end());
  headers.emplace_back("Connection", keep_alive ? "keep-alive" : "close");
  return absl::StrCat(StatusLine(200), HeaderLines(headers), "\r\n");
}

std::string StreamChunkBytes(const std::string& events, bool chunked) {
  if (events.empty()) return std::string();
  if (!chunked) return events;
  return absl::StrCat(absl::StrFormat("%x\r\n", events.size()), events, "\r\n");
}

std::string RefusalBytes(beast::error_code ec, int64_t max_body_bytes) {
  int status = 400;
  std::string message = absl::StrCat("malformed HTTP request: ", ec.message());
  if (ec == http::error::body_limit) {
    status = 413;
    message = absl::StrCat("the request body is larger than ", max_body_bytes,
                           " bytes (--max-message-bytes)");
  } else if (ec == http::error::header_limit) {
    status = 431;
    message = absl::StrCat("the request header is larger than ", kMaxHeaderBytes, " bytes");
  }
  const std::string body = absl::StrCat(
      R"({"error":{"message":")", message, R"(","type":"invalid_request_error","param":null,)",
      R"("code":)", status == 413 ? R"("request_too_large")" : "null", "}}");
  return absl::StrCat(StatusLine(status),
                      HeaderLines({{"Content-Type", "application/json"},
                                   {"Content-Length", absl::StrCat(body.size())},
                                   {"Connection", "close"}}),
                      "\r\n", body);
}

HttpRequest ToHttpRequest(http::request<http::string_body>& message, const std::string& peer) {
  HttpRequest request;
  request.method = std::string(message.method_string());
  const std::string_view target(message.target().data(), message.target().size());
  request.path = std::string(target.substr(0, target.find('?')));
  request.body = std::move(message.body());
  if (auto it = message.find(http::field::authorization); it != message.end()) {
    request.authorization = std::string(it->value());
  }
  if (auto it = message.find("x-request-id"); it != message.end()) {
    request.request_id = std::string(it->value());
  }
  if (auto it = message.find("traceparent"); it != message.end()) {
    request.traceparent = std::string(it->value());
  }
  request.peer = peer;
  return request;
}

}  // namespace hgrn2::server::http_wire

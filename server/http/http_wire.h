// The HTTP/1.1 bytes the connections write (status line, header lines, chunks, the transport's own
// refusals) and the request they hand on, out of Beast's parser. No I/O here.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "server/http/http_exchange.h"

namespace hgrn2::server::http_wire {

using Headers = std::vector<std::pair<std::string, std::string>>;

// The largest request header a connection reads.
inline constexpr size_t kMaxHeaderBytes = 16 << 10;

// "ipv4:127.0.0.1:5000" or "ipv6:[::1]:5000", as gRPC names peers; "unknown" when unconnected.
std::string PeerOf(const boost::asio::ip::tcp::socket& socket);

// A whole response: status line, headers (Content-Type, Content-Length, the response's own,
// Connection) and body.
std::string ResponseBytes(const HttpResponse& response, bool keep_alive);

// The start of an event stream (200, text/event-stream, chunked unless HTTP/1.0), with `extra`.
std::string StreamHeadBytes(const Headers& extra, bool chunked, bool keep_alive);
// Events as one chunk (or as they are, unchunked, for HTTP/1.0); nothing for none.
std::string StreamChunkBytes(const std::string& events, bool chunked);
inline constexpr const char* kLastChunk = "0\r\n\r\n";
inline constexpr const char* kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// A request the transport cannot take (malformed, body over `max_body_bytes`, header too large):
// an error in OpenAI's shape, 400, 413 or 431, with Connection: close.
std::string RefusalBytes(boost::beast::error_code ec, int64_t max_body_bytes);

// The parsed request as the API sees it (the path without its query), from `peer`.
HttpRequest ToHttpRequest(boost::beast::http::request<boost::beast::http::string_body>& message,
                          const std::string& peer);

}  // namespace hgrn2::server::http_wire

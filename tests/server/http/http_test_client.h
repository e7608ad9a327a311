// A blocking HTTP/1.1 client for the OpenAI-compatible API's in-process tests (Boost.Beast): one
// request per connection, the whole answer read, an event stream split into its events.
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace hgrn2::server::testing_http {

struct Reply {
  int status = 0;                              // 0: no answer (connection failed)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  nlohmann::json json;  // the body parsed, when it is JSON
  // An event stream's events' data (parsed JSON), and whether "data: [DONE]" ended it.
  std::vector<nlohmann::json> events;
  bool done = false;
};

inline Reply Request(int port, const std::string& method, const std::string& path,
                     const std::string& body = "",
                     const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  beast::error_code ec;
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  Reply reply;
  if (ec) return reply;
  http::request<http::string_body> request(
      method == "GET" ? http::verb::get : (method == "POST" ? http::verb::post : http::verb::put),
      path, 11);
  request.set(http::field::host, "127.0.0.1");
  if (!body.empty() || method == "POST") {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
  }
  for (const auto& [name, value] : headers) request.set(name, value);
  http::write(socket, request, ec);
  if (ec) return reply;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  http::read(socket, buffer, parser, ec);
  if (ec && ec != http::error::end_of_stream) return reply;
  const auto& response = parser.get();
  reply.status = response.result_int();
  for (const auto& field : response) {
    reply.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
        std::string(field.value());
  }
  reply.body = response.body();
  reply.json = nlohmann::json::parse(reply.body, nullptr, false);
  if (absl::StartsWith(reply.headers["content-type"], "text/event-stream")) {
    for (absl::string_view event : absl::StrSplit(reply.body, "\n\n", absl::SkipEmpty())) {
      if (!absl::ConsumePrefix(&event, "data: ")) continue;
      if (event == "[DONE]") {
        reply.done = true;
        continue;
      }
      reply.events.push_back(nlohmann::json::parse(event, nullptr, false));
    }
  }
  return reply;
}

inline Reply Post(int port, const std::string& path, const nlohmann::json& body,
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return Request(port, "POST", path, body.dump(), headers);
}

}  // namespace hgrn2::server::testing_http

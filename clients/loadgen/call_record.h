// What one finished load-generator call contributes to the report, whatever its protocol.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hgrn2::loadgen {

using Clock = std::chrono::steady_clock;

struct CallRecord {
  bool measured = false;
  std::string error;  // empty: OK; else the gRPC code's name, or HTTP_<status>, or CONNECTION
  Clock::time_point start, end;
  std::optional<Clock::time_point> first_token;
  std::vector<double> inter_token;  // seconds, one per token after the first
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;

  // k tokens arrived together at `now`: they share the gap since the previous ones (the first
  // message's tokens after the first count 0).
  void AddTokens(int64_t k, Clock::time_point now) {
    if (k <= 0) return;
    if (first_token) {
      const double each = std::chrono::duration<double>(now - last_tokens).count() / k;
      inter_token.insert(inter_token.end(), static_cast<size_t>(k), each);
    } else {
      first_token = now;
      inter_token.insert(inter_token.end(), static_cast<size_t>(k - 1), 0.0);
    }
    last_tokens = now;
    generated_tokens += k;
    arrivals.emplace_back(now, k);
  }
  Clock::time_point last_tokens;
  std::vector<std::pair<Clock::time_point, int64_t>> arrivals;  // when tokens came, how many
};

}  // namespace hgrn2::loadgen

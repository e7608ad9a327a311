// Shared helpers for the tests.
#include "tests/support/test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace hgrn2::testing {
namespace {

std::mutex temp_dirs_mutex;
std::vector<std::filesystem::path>* temp_dirs = nullptr;

void RemoveTempDirs() {
  std::lock_guard<std::mutex> lock(temp_dirs_mutex);
  if (temp_dirs == nullptr) return;
  for (const auto& dir : *temp_dirs) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

}  // namespace

std::filesystem::path TestDataDir() {
  // The GPU machine runs test binaries built elsewhere: it points them at its own checkout.
  if (const char* dir = std::getenv("HGRN2_TEST_DATA_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  return HGRN2_TEST_DATA_DIR;
}

std::filesystem::path MakeTempDir() {
  static std::atomic<int> counter{0};
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              absl::StrCat("hgrn2-test-", getpid(), "-", counter.fetch_add(1));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::lock_guard<std::mutex> lock(temp_dirs_mutex);
  if (temp_dirs == nullptr) {
    temp_dirs = new std::vector<std::filesystem::path>();
    std::atexit(RemoveTempDirs);
  }
  temp_dirs->push_back(dir);
  return dir;
}

void WriteFile(const std::filesystem::path& path, std::string_view contents) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 std::initializer_list<std::string_view> needles) {
  EXPECT_EQ(status.code(), code) << status;
  const std::string message(status.message());
  for (std::string_view needle : needles) {
    EXPECT_NE(message.find(needle), std::string::npos)
        << "message \"" << message << "\" does not contain \"" << needle << "\"";
  }
}

std::vector<float> RandomNormal(size_t count, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

double RelativeL2Error(absl::Span<const float> a, absl::Span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0;
  double norm = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  if (norm == 0.0) return std::sqrt(diff);
  return std::sqrt(diff / norm);
}

int FreeLoopbackPort() {
  const int probe = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  EXPECT_EQ(bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t size = sizeof(address);
  getsockname(probe, reinterpret_cast<sockaddr*>(&address), &size);
  close(probe);
  return ntohs(address.sin_port);
}

}  // namespace hgrn2::testing

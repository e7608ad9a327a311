// Shared helpers for the tests: fixture paths, temporary folders, files, error-relative norms.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace hgrn2::testing {

// tests/data in the source tree.
std::filesystem::path TestDataDir();

// A fresh, empty folder under the system temp dir, unique per call; removed at process exit.
std::filesystem::path MakeTempDir();

// Writes `contents` to `path` (binary), creating parent folders. Fails the test on error.
void WriteFile(const std::filesystem::path& path, std::string_view contents);

// Checks the status code and that the message contains every one of `needles`.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 std::initializer_list<std::string_view> needles);

// `count` draws of N(0, stddev²) from a generator seeded with `seed`.
std::vector<float> RandomNormal(size_t count, uint64_t seed, float stddev = 1.0f);

// ||a - b||_2 / ||b||_2 in double precision (b is the reference).
double RelativeL2Error(absl::Span<const float> a, absl::Span<const float> b);

// A loopback port nothing listens on now (the kernel's pick for a bind to port 0), for a server a
// test starts on a port it must know beforehand (metrics, HTTP).
int FreeLoopbackPort();

}  // namespace hgrn2::testing

// What a fuzz target defines: libFuzzer's entry point, and optionally seeds made in code (valid
// inputs of the current format, which a corpus on disk could fall behind).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// Weak: fuzz_driver_main.cc runs these too when the target defines them.
__attribute__((weak)) std::vector<std::string> FuzzBuiltInSeeds();

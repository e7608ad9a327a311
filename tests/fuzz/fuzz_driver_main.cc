// A main for fuzz targets in builds without libFuzzer (gcc, CI): runs the seed corpus given on the
// command line (files or folders), the target's built-in seeds if it has any, and a fixed number
// of deterministic mutations of them, so the ordinary test suite exercises the target.
// `--write-seeds DIR` writes the built-in seeds (to refresh a corpus folder).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"

namespace {

void Run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One random edit of the kinds libFuzzer makes: flip bits, overwrite bytes with random or
// boundary values (in the header, where the fields are), truncate, extend, splice two inputs.
std::string Mutate(const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  std::string s = corpus[rng() % corpus.size()];
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t at = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 7) {
      case 0:
        if (!s.empty()) s[at] = static_cast<char>(s[at] ^ (1u << (rng() % 8)));
        break;
      case 1:
        if (!s.empty()) s[rng() % std::min<size_t>(s.size(), 128)] = static_cast<char>(rng());
        break;
      case 2:
        if (!s.empty()) {
          const char boundary[] = {0, 1, 0x7f, static_cast<char>(0x80), static_cast<char>(0xff)};
          s[rng() % std::min<size_t>(s.size(), 128)] = boundary[rng() % 5];
        }
        break;
      case 3:
        s.resize(rng() % (s.size() + 1));
        break;
      case 4:
        s.append(1 + rng() % 16, static_cast<char>(rng()));
        break;
      case 5: {
        const std::string& other = corpus[rng() % corpus.size()];
        const size_t cut = rng() % (std::min(s.size(), other.size()) + 1);
        s = s.substr(0, cut) + other.substr(std::min(cut, other.size()));
        break;
      }
      default:
        if (s.size() >= 8) {  // a random 64-bit little-endian field in the header
          const size_t field = (rng() % 16) * 8;
          for (int i = 0; i < 8 && field + i < s.size(); ++i)
            s[field + i] = static_cast<char>(rng());
        }
        break;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> corpus;
  if (FuzzBuiltInSeeds != nullptr) corpus = FuzzBuiltInSeeds();
  const size_t built_in = corpus.size();
  corpus.push_back(std::string());
  int mutations = 20000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--write-seeds" && i + 1 < argc) {
      const std::filesystem::path dir = argv[++i];
      std::filesystem::create_directories(dir);
      for (size_t s = 0; s < built_in; ++s) {
        std::ofstream(dir / ("seed-" + std::to_string(s)), std::ios::binary) << corpus[s];
      }
      return 0;
    }
    if (arg.rfind("--mutations=", 0) == 0) {
      mutations = std::stoi(arg.substr(12));
      continue;
    }
    const std::filesystem::path path = arg;
    if (std::filesystem::is_directory(path)) {
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        corpus.push_back(ReadFile(entry.path()));
      }
    } else {
      corpus.push_back(ReadFile(path));
    }
  }
  for (const std::string& input : corpus) Run(input);
  std::mt19937_64 rng(20240601);
  for (int i = 0; i < mutations; ++i) Run(Mutate(corpus, rng));
  std::printf("fuzz driver: %zu corpus inputs and %d mutations ran\n", corpus.size(), mutations);
  return 0;
}

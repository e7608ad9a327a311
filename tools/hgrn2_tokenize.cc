// hgrn2-tokenize: text to token ids and back with a model folder's tokenizer.
//
// Encode:  hgrn2-tokenize --tokenizer DIR [--add-special] < text     prints "id id id\n"
// Decode:  hgrn2-tokenize --tokenizer DIR --decode [--skip-special] < ids   prints the text
//
// Standard input is read whole, as raw bytes (nothing trimmed). Encoding prints the ids on one
// line separated by single spaces; decoding writes the text and nothing else. --time reports the
// encoding or decoding speed on standard error (bench/tokenizer_speed.sh uses it).
// Exit codes: 0 success; 2 bad arguments, a tokenizer that cannot be loaded, or input that is
// not valid (text not UTF-8, an id outside the vocabulary), with one line on stderr.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/tokenizer/tokenizer.h"

namespace hgrn2 {
namespace {

constexpr int kExitUsage = 2;

struct TokenizeOptions {
  std::string tokenizer;
  bool add_special = false;
  bool decode = false;
  bool skip_special = false;
  bool time = false;
};

int Fail(absl::string_view message) {
  std::fprintf(stderr, "hgrn2-tokenize: %.*s\n", static_cast<int>(message.size()), message.data());
  return kExitUsage;
}

std::string ReadStdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void ReportSpeed(absl::string_view what, size_t bytes, size_t ids, double seconds) {
  std::fprintf(stderr, "hgrn2-tokenize: %.*s %zu bytes <-> %zu ids in %.1f ms: %.2f MB/s\n",
               static_cast<int>(what.size()), what.data(), bytes, ids, seconds * 1e3,
               static_cast<double>(bytes) / 1e6 / seconds);
}

int Run(const TokenizeOptions& options) {
  if (options.add_special && options.decode) return Fail("--add-special is for encoding only");
  if (options.skip_special && !options.decode) return Fail("--skip-special needs --decode");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(options.tokenizer);
  if (!tokenizer.ok()) return Fail(tokenizer.status().message());
  const std::string input = ReadStdin();

  if (!options.decode) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(input, options.add_special);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!ids.ok()) return Fail(ids.status().message());
    const std::string line = absl::StrCat(absl::StrJoin(*ids, " "), "\n");
    std::fwrite(line.data(), 1, line.size(), stdout);
    if (options.time) ReportSpeed("encoded", input.size(), ids->size(), seconds);
    return 0;
  }

  std::vector<int32_t> ids;
  for (absl::string_view word :
       absl::StrSplit(input, absl::ByAnyChar(" \t\r\n\v\f"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(word, &id)) {
      return Fail(absl::StrCat("--decode: \"", word, "\" is not an integer token id"));
    }
    ids.push_back(id);
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> text = (*tokenizer)->Decode(ids, options.skip_special);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!text.ok()) return Fail(text.status().message());
  std::fwrite(text->data(), 1, text->size(), stdout);
  if (options.time) ReportSpeed("decoded", text->size(), ids.size(), seconds);
  return 0;
}

}  // namespace
}  // namespace hgrn2

int main(int argc, char** argv) {
  hgrn2::TokenizeOptions options;
  CLI::App app{"hgrn2-tokenize: text on stdin to token ids, or ids to text with --decode"};
  app.add_option("--tokenizer", options.tokenizer,
                 "a model folder, a folder with tokenizer.json or tokenizer.model, or the file")
      ->required();
  app.add_flag("--add-special", options.add_special,
               "add BOS/EOS as the tokenizer's post-processor says (default: none)");
  app.add_flag("--decode", options.decode, "read whitespace-separated ids, write their text");
  app.add_flag("--skip-special", options.skip_special, "with --decode: leave out special tokens");
  app.add_flag("--time", options.time, "report the speed on standard error");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-tokenize: %s (see --help)\n", e.what());
    return hgrn2::kExitUsage;
  }
  return hgrn2::Run(options);
}

// The bundled demo model (models/hgrn2-demo) on the CPU engine against what fla computed when it
// was trained (tests/data/hgrn2-demo-eval): held-out perplexity through Engine::Score, per-token
// log-probabilities of an excerpt, and greedy continuations of fixed prompts, tokenized by our
// tokenizer exactly as the training run tokenized them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::TestDataDir;

// Largest |Δ log p| allowed against fla's float32 values: ten times the largest difference
// measured on the excerpt (8.8e-6; both run float32 on the same bf16 weights).
constexpr double kLogprobTolerance = 1e-4;
// Largest relative difference of a perplexity from fla's: exp(mean Δ log p) - 1, where per-token
// errors of ~1e-5 at most (see above) partly cancel. Measured: 9e-8 for the worst chapter, 3e-8
// over all eleven.
constexpr double kPerplexityTolerance = 1e-5;

std::filesystem::path ModelDir() {
  return TestDataDir().parent_path().parent_path() / "models" / "hgrn2-demo";
}
std::filesystem::path EvalDir() { return TestDataDir() / "hgrn2-demo-eval"; }

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

class DemoModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = MakeCpuBackend();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelDir(), *backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(ModelDir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    EngineOptions options;
    options.max_running = 16;
    options.prefill_token_budget = 4096;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(*model_, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  std::vector<int32_t> Encode(const std::string& text) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, /*add_special=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>();
  }

  void CheckHeldOut(const std::vector<int>& docs);

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Engine> engine_;
};

// The held-out chapters the CPU suite scores: the four shortest (Sense & Sensibility 13, Pride &
// Prejudice 13 and 38, Northanger Abbey 24; 9,910 of the 42,160 positions), ~15 s on one core of
// the 2-core CI machine. All eleven take ~70 s: DISABLED_AllHeldOutPerplexityMatchesFla, which
// gives the model card's number.
constexpr int kShortHeldOutDocs[] = {12, 62, 87, 237};

// Scores the held-out chapters numbered `docs` (all when empty), each from a fresh state, after
// checking that our tokenizer gives exactly the ids the training run scored; checks each chapter's
// positions and perplexity against fla's, and their pooled perplexity against the one fla's
// per-chapter sums give.
void DemoModelTest::CheckHeldOut(const std::vector<int>& docs) {
  const nlohmann::json recorded = ReadJson(EvalDir() / "heldout.json");
  const nlohmann::json recorded_ids = ReadJson(EvalDir() / "heldout_ids.json");
  std::ifstream lines(EvalDir() / "heldout.jsonl");
  std::vector<nlohmann::json> documents;
  for (std::string line; std::getline(lines, line);)
    documents.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(documents.size(), recorded["documents"].size());
  ASSERT_EQ(documents.size(), recorded_ids["documents"].size());
  std::vector<size_t> chosen;
  for (size_t d = 0; d < documents.size(); ++d) {
    const int doc = documents[d]["doc"].get<int>();
    if (docs.empty() || std::find(docs.begin(), docs.end(), doc) != docs.end()) chosen.push_back(d);
  }
  ASSERT_EQ(chosen.size(), docs.empty() ? documents.size() : docs.size());
  std::vector<std::shared_ptr<PendingScore>> pending;
  for (size_t d : chosen) {
    ScoreRequest request;
    request.tokens = Encode(documents[d]["text"].get<std::string>());
    ASSERT_EQ(recorded_ids["documents"][d]["doc"], documents[d]["doc"]);
    ASSERT_EQ(request.tokens, recorded_ids["documents"][d]["ids"].get<std::vector<int32_t>>())
        << "chapter " << documents[d]["doc"];
    absl::StatusOr<std::shared_ptr<PendingScore>> score = engine_->Score(std::move(request));
    ASSERT_TRUE(score.ok()) << score.status();
    pending.push_back(*score);
  }
  double worst = 0.0;  // largest relative difference of a chapter's perplexity
  double nll_sum = 0.0;
  double fla_nll_sum = 0.0;
  int64_t positions = 0;
  for (size_t i = 0; i < chosen.size(); ++i) {
    const size_t d = chosen[i];
    absl::StatusOr<ScoreResult> result = pending[i]->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    const nlohmann::json& want = recorded["documents"][d];
    ASSERT_EQ(want["doc"], documents[d]["doc"]);
    ASSERT_EQ(static_cast<int64_t>(result->logprobs.size()), want["positions"].get<int64_t>())
        << "chapter " << want["doc"];
    double nll = 0.0;
    for (float logprob : result->logprobs) nll -= logprob;
    const double perplexity = std::exp(nll / static_cast<double>(result->logprobs.size()));
    const double difference = perplexity / want["perplexity"].get<double>() - 1.0;
    worst = std::max(worst, std::abs(difference));
    EXPECT_NEAR(difference, 0.0, kPerplexityTolerance) << "chapter " << want["doc"];
    nll_sum += nll;
    fla_nll_sum += want["nll_sum"].get<double>();
    positions += static_cast<int64_t>(result->logprobs.size());
  }
  const double perplexity = std::exp(nll_sum / static_cast<double>(positions));
  const double fla_perplexity = std::exp(fla_nll_sum / static_cast<double>(positions));
  std::cout << std::setprecision(8) << "[demo] held-out perplexity over " << chosen.size()
            << " chapters, " << positions << " positions: " << perplexity << " (fla "
            << fla_perplexity << ", relative difference " << perplexity / fla_perplexity - 1.0
            << "; largest of a chapter " << worst << ")\n";
  EXPECT_NEAR(perplexity / fla_perplexity, 1.0, kPerplexityTolerance);
  if (docs.empty()) {
    EXPECT_EQ(positions, recorded["heldout"]["positions"].get<int64_t>());
    EXPECT_NEAR(perplexity / recorded["heldout"]["perplexity"].get<double>(), 1.0,
                kPerplexityTolerance);
  }
}

TEST_F(DemoModelTest, ShortHeldOutPerplexityMatchesFla) {
  CheckHeldOut(std::vector<int>(std::begin(kShortHeldOutDocs), std::end(kShortHeldOutDocs)));
}

// The model card's held-out perplexity: run on demand with
//   build/bin/demo_model_test --gtest_also_run_disabled_tests --gtest_filter='*AllHeldOut*'
TEST_F(DemoModelTest, DISABLED_AllHeldOutPerplexityMatchesFla) { CheckHeldOut({}); }

// The excerpt's ids are our tokenizer's, and every token's log-probability is fla's.
TEST_F(DemoModelTest, ExcerptLogprobsMatchFla) {
  const nlohmann::json excerpt = ReadJson(EvalDir() / "excerpt.json");
  const std::vector<int32_t> ids = excerpt["ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(Encode(excerpt["text"].get<std::string>()), ids);
  ScoreRequest request;
  request.tokens = ids;
  absl::StatusOr<std::shared_ptr<PendingScore>> score = engine_->Score(request);
  ASSERT_TRUE(score.ok()) << score.status();
  absl::StatusOr<ScoreResult> result = (*score)->Wait();
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<double> want = excerpt["logprobs"].get<std::vector<double>>();
  // fla's most probable token at each position.
  const std::vector<int32_t> argmax = excerpt["argmax"].get<std::vector<int32_t>>();
  const std::vector<double> margins = excerpt["top2_margin"].get<std::vector<double>>();
  ASSERT_EQ(result->logprobs.size(), want.size());
  double worst = 0.0;
  for (size_t t = 0; t < want.size(); ++t) {
    worst = std::max(worst, std::abs(result->logprobs[t] - want[t]));
    EXPECT_NEAR(result->logprobs[t], want[t], kLogprobTolerance) << "token " << t + 1;
    if (margins[t] > kLogprobTolerance) {
      EXPECT_EQ(result->is_argmax[t], argmax[t] == ids[t + 1]) << "token " << t + 1;
    }
  }
  std::cout << "[demo] excerpt: " << want.size() << " log-probabilities, max |diff| vs fla "
            << worst << "\n";
}

// Greedy continuations equal fla's up to the first step where fla's top two were closer than our
// error could tell apart; the first prompt's text is the model card's sample.
TEST_F(DemoModelTest, GreedyContinuationsMatchFla) {
  const nlohmann::json greedy = ReadJson(EvalDir() / "greedy.json");
  for (const nlohmann::json& prompt : greedy["prompts"]) {
    const std::string text = prompt["prompt"].get<std::string>();
    const std::vector<int32_t> prompt_ids = prompt["prompt_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(Encode(text), prompt_ids) << text;
    GenerationRequest request;
    request.prompt = prompt_ids;
    request.sampling.temperature = 0.0f;
    request.stopping.max_new_tokens = greedy["new_tokens"].get<int32_t>();
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine_->Generate(request);
    ASSERT_TRUE(stream.ok()) << stream.status();
    const StreamUpdate all = (*stream)->Wait();
    ASSERT_TRUE(all.end->status.ok()) << all.end->status;
    const std::vector<int32_t> want = prompt["ids"].get<std::vector<int32_t>>();
    const std::vector<double> margins = prompt["margins"].get<std::vector<double>>();
    size_t compared = 0;
    for (; compared < want.size() && margins[compared] > kLogprobTolerance; ++compared) {
      ASSERT_LT(compared, all.tokens.size()) << text;
      EXPECT_EQ(all.tokens[compared].id, want[compared]) << text << ", token " << compared;
    }
    if (compared == want.size()) {
      EXPECT_EQ(all.tokens.size(), want.size()) << text;
    }
    std::cout << "[demo] \"" << text << "\": " << compared << " of " << want.size()
              << " greedy tokens compared\n";
  }
  // The model card's first sample, as text.
  const nlohmann::json& first = greedy["prompts"][0];
  GenerationRequest request;
  request.prompt = Encode(first["prompt"].get<std::string>());
  request.sampling.temperature = 0.0f;
  request.stopping.max_new_tokens = greedy["new_tokens"].get<int32_t>();
  absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine_->Generate(request);
  ASSERT_TRUE(stream.ok()) << stream.status();
  const StreamUpdate all = (*stream)->Wait();
  ASSERT_TRUE(all.end->status.ok()) << all.end->status;
  std::vector<int32_t> ids;
  for (const SampledToken& token : all.tokens) ids.push_back(token.id);
  absl::StatusOr<std::string> decoded = tokenizer_->Decode(ids, /*skip_special=*/true);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, first["text"].get<std::string>());
}

}  // namespace
}  // namespace hgrn2

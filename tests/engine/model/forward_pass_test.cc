// The forward pass at awkward sizes: chunked vs token-by-token prefill, split prompts, decode vs
// prefill, batch invariance, an independent float64 oracle on random models, and bad input.
#include "engine/model/forward_pass.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/generation.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/reference_model.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::RandomModelSpec;
using ::hgrn2::testing::RelativeL2Error;
using ::testing::HasSubstr;

std::vector<int32_t> RandomIds(int64_t count, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

// A model on the CPU backend with a pool and two passes over it: chunked and token by token.
struct Engine {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::unique_ptr<Model> model;
  std::unique_ptr<StatePool> pool;
  std::unique_ptr<ForwardPass> chunked;
  std::unique_ptr<ForwardPass> recurrent;

  explicit Engine(const std::filesystem::path& dir, int64_t max_tokens = 512,
                  int32_t chunk_size = 64) {
    absl::StatusOr<std::unique_ptr<Model>> loaded = Model::Load(dir, *backend);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (!loaded.ok()) return;
    model = *std::move(loaded);
    pool = *StatePool::Create(*backend, model->config(), 8);
    ForwardPass::Options options;
    options.max_tokens = max_tokens;
    options.max_sequences = 8;
    options.prefill_chunk_size = chunk_size;
    chunked = *ForwardPass::Create(*model, *pool, options);
    options.prefill_chunk_size = 0;
    recurrent = *ForwardPass::Create(*model, *pool, options);
  }

  std::vector<float> Logits(ForwardPass& pass, SlotId slot, absl::Span<const int32_t> ids) {
    const SequenceTokens seq{slot, ids};
    absl::StatusOr<DeviceTensor> logits = pass.Prefill({&seq, 1}, LogitsFor::kEveryToken);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return *pass.LogitsToHost(*logits);
  }
  std::vector<float> State(SlotId slot) {
    std::vector<float> values(pool->slot_bytes() / 4);
    EXPECT_TRUE(pool->ReadHost(slot, absl::MakeSpan(reinterpret_cast<std::byte*>(values.data()),
                                                    pool->slot_bytes()))
                    .ok());
    return values;
  }
  void SetRandomState(SlotId slot, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    std::vector<float> values(pool->slot_bytes() / 4);
    for (float& value : values) value = normal(rng);
    ASSERT_TRUE(
        pool->WriteHost(slot, absl::MakeConstSpan(reinterpret_cast<const std::byte*>(values.data()),
                                                  pool->slot_bytes()))
            .ok());
  }
};

std::filesystem::path AwkwardModel(RandomModelSpec spec = {}) {
  const std::filesystem::path dir = testing::MakeTempDir() / "model";
  testing::WriteRandomModel(dir, spec);
  return dir;
}

class ChunkedVsRecurrent : public ::testing::TestWithParam<int> {};

TEST_P(ChunkedVsRecurrent, AgreeFromZeroAndFromAGivenState) {
  const int length = GetParam();
  Engine engine(AwkwardModel());
  const std::vector<int32_t> ids = RandomIds(length, 97, 100 + length);
  for (bool from_zero : {true, false}) {
    SCOPED_TRACE(from_zero ? "from zero state" : "from a random state");
    const SlotId a = *engine.pool->Allocate();
    const SlotId b = *engine.pool->Allocate();
    if (!from_zero) {
      engine.SetRandomState(a, 7);
      engine.SetRandomState(b, 7);
    }
    const std::vector<float> chunked = engine.Logits(*engine.chunked, a, ids);
    const std::vector<float> recurrent = engine.Logits(*engine.recurrent, b, ids);
    EXPECT_LT(RelativeL2Error(chunked, recurrent), 1e-5);
    EXPECT_LT(RelativeL2Error(engine.State(a), engine.State(b)), 1e-5);
    ASSERT_TRUE(engine.pool->Free(a).ok());
    ASSERT_TRUE(engine.pool->Free(b).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, ChunkedVsRecurrent, ::testing::Values(1, 15, 63, 64, 65, 200));

TEST(ForwardPass, SplittingAPromptAnywhereGivesTheSameLogits) {
  Engine engine(AwkwardModel());
  const std::vector<int32_t> ids = RandomIds(150, 97, 3);
  const SlotId whole_slot = *engine.pool->Allocate();
  const std::vector<float> whole = engine.Logits(*engine.chunked, whole_slot, ids);
  const int64_t vocab = 97;
  for (int split : {1, 2, 17, 63, 64, 65, 100, 149}) {
    SCOPED_TRACE(absl::StrCat("split at ", split));
    const SlotId slot = *engine.pool->Allocate();
    std::vector<float> parts =
        engine.Logits(*engine.chunked, slot, absl::MakeConstSpan(ids).subspan(0, split));
    const std::vector<float> rest =
        engine.Logits(*engine.chunked, slot, absl::MakeConstSpan(ids).subspan(split));
    parts.insert(parts.end(), rest.begin(), rest.end());
    ASSERT_EQ(parts.size(), static_cast<size_t>(150 * vocab));
    EXPECT_LT(RelativeL2Error(parts, whole), 1e-5);
    EXPECT_LT(RelativeL2Error(engine.State(slot), engine.State(whole_slot)), 1e-5);
    ASSERT_TRUE(engine.pool->Free(slot).ok());
  }
}

TEST(ForwardPass, DecodeStepsEqualPrefill) {
  Engine engine(AwkwardModel());
  const std::vector<int32_t> ids = RandomIds(40, 97, 4);
  const SlotId prefill_slot = *engine.pool->Allocate();
  const std::vector<float> prefill = engine.Logits(*engine.recurrent, prefill_slot, ids);
  const SlotId decode_slot = *engine.pool->Allocate();
  std::vector<float> decoded;
  for (int32_t id : ids) {
    absl::StatusOr<DeviceTensor> logits = engine.chunked->Decode({&decode_slot, 1}, {&id, 1});
    ASSERT_TRUE(logits.ok()) << logits.status();
    std::vector<float> host = *engine.chunked->LogitsToHost(*logits);
    decoded.insert(decoded.end(), host.begin(), host.end());
  }
  // Token by token in both: the same arithmetic, so the same bits.
  EXPECT_EQ(decoded, prefill);
  EXPECT_EQ(engine.State(decode_slot), engine.State(prefill_slot));
}

TEST(ForwardPass, BatchedSequencesAreBitIdenticalToSequencesAlone) {
  Engine engine(AwkwardModel());
  const std::vector<int> lengths = {1, 70, 15, 64, 3};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<SequenceTokens> batch;
  for (size_t i = 0; i < lengths.size(); ++i) {
    prompts.push_back(RandomIds(lengths[i], 97, 50 + i));
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    batch.push_back({*engine.pool->Allocate(), prompts[i]});
  }
  absl::StatusOr<DeviceTensor> logits = engine.chunked->Prefill(batch, LogitsFor::kLastToken);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<float> batched = *engine.chunked->LogitsToHost(*logits);
  std::vector<std::vector<float>> batched_states;
  for (const SequenceTokens& seq : batch) batched_states.push_back(engine.State(seq.slot));

  // Decode one more token for all of them at once, then compare with each alone.
  std::vector<SlotId> slots;
  std::vector<int32_t> next;
  for (size_t i = 0; i < batch.size(); ++i) {
    slots.push_back(batch[i].slot);
    next.push_back(static_cast<int32_t>(11 * i + 5));
  }
  const std::vector<float> batched_decode =
      *engine.chunked->LogitsToHost(*engine.chunked->Decode(slots, next));

  for (size_t i = 0; i < batch.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("sequence ", i));
    const SlotId alone = *engine.pool->Allocate();
    const SequenceTokens seq{alone, prompts[i]};
    const std::vector<float> solo =
        *engine.chunked->LogitsToHost(*engine.chunked->Prefill({&seq, 1}, LogitsFor::kLastToken));
    EXPECT_EQ(solo, std::vector<float>(batched.begin() + i * 97, batched.begin() + (i + 1) * 97));
    EXPECT_EQ(engine.State(alone), batched_states[i]);
    const std::vector<float> solo_decode =
        *engine.chunked->LogitsToHost(*engine.chunked->Decode({&alone, 1}, {&next[i], 1}));
    EXPECT_EQ(solo_decode, std::vector<float>(batched_decode.begin() + i * 97,
                                              batched_decode.begin() + (i + 1) * 97));
    ASSERT_TRUE(engine.pool->Free(alone).ok());
  }
}

TEST(ForwardPass, SlotsOutsideTheBatchAreBitIdenticalAfterPrefillAndDecode) {
  Engine engine(AwkwardModel());
  // The bystander sits between the batch's slots, where an off-by-one slot index would land.
  const SlotId a = *engine.pool->Allocate();
  const SlotId bystander = *engine.pool->Allocate();
  const SlotId b = *engine.pool->Allocate();
  ASSERT_LT(a, bystander);
  ASSERT_LT(bystander, b);
  engine.SetRandomState(a, 31);
  engine.SetRandomState(bystander, 32);
  engine.SetRandomState(b, 33);
  const std::vector<float> bystander_before = engine.State(bystander);
  const std::vector<float> a_before = engine.State(a), b_before = engine.State(b);
  const std::vector<int32_t> long_prompt = RandomIds(70, 97, 34),
                             short_prompt = RandomIds(5, 97, 35);
  const std::vector<SequenceTokens> batch = {{b, long_prompt}, {a, short_prompt}};
  for (ForwardPass* pass : {engine.chunked.get(), engine.recurrent.get()}) {
    ASSERT_TRUE(pass->Prefill(batch, LogitsFor::kLastToken).ok());
    EXPECT_EQ(engine.State(bystander), bystander_before);
  }
  const std::vector<SlotId> slots = {a, b};
  const std::vector<int32_t> next = {7, 90};
  ASSERT_TRUE(engine.chunked->Decode(slots, next).ok());
  EXPECT_EQ(engine.State(bystander), bystander_before);
  // The batch's own slots did advance.
  EXPECT_NE(engine.State(a), a_before);
  EXPECT_NE(engine.State(b), b_before);
}

struct OracleCase {
  std::string name;
  RandomModelSpec spec;
};

class MatchesFloat64Oracle : public ::testing::TestWithParam<OracleCase> {};

TEST_P(MatchesFloat64Oracle, LogitsAndStates) {
  const RandomModelSpec& spec = GetParam().spec;
  const std::filesystem::path dir = AwkwardModel(spec);
  Engine engine(dir);
  ASSERT_NE(engine.model, nullptr);
  testing::NaiveHgrn2 oracle(dir);
  const std::vector<int32_t> ids = RandomIds(70, spec.vocab_size, spec.seed);
  std::vector<float> expected;
  for (int32_t id : ids) {
    const std::vector<double> logits = oracle.Step(id);
    expected.insert(expected.end(), logits.begin(), logits.end());
  }
  for (ForwardPass* pass : {engine.chunked.get(), engine.recurrent.get()}) {
    const SlotId slot = *engine.pool->Allocate();
    const std::vector<float> logits = engine.Logits(*pass, slot, ids);
    EXPECT_LT(RelativeL2Error(logits, expected), 1e-5);
    const std::vector<float> state = engine.State(slot);
    const int64_t per_layer = engine.model->config().state_floats_per_layer();
    for (int64_t l = 0; l < spec.num_layers; ++l) {
      const std::vector<float> layer(state.begin() + l * per_layer,
                                     state.begin() + (l + 1) * per_layer);
      EXPECT_LT(RelativeL2Error(layer, oracle.State(l)), 1e-5) << "layer " << l;
    }
    ASSERT_TRUE(engine.pool->Free(slot).ok());
  }
}

RandomModelSpec Spec(int64_t v, int64_t d, int64_t l, int64_t h, int64_t k, bool lb, bool tied,
                     RandomModelSpec::HeadsField field, DType dtype, int64_t inter = 0) {
  RandomModelSpec spec;
  spec.vocab_size = v;
  spec.hidden_size = d;
  spec.num_layers = l;
  spec.num_heads = h;
  spec.conv_size = k;
  spec.use_lower_bound = lb;
  spec.tie_word_embeddings = tied;
  spec.heads_field = field;
  spec.dtype = dtype;
  spec.intermediate_size = inter;
  spec.seed = static_cast<uint64_t>(v * 31 + d);
  return spec;
}

using HF = RandomModelSpec::HeadsField;
INSTANTIATE_TEST_SUITE_P(
    Shapes, MatchesFloat64Oracle,
    ::testing::Values(
        OracleCase{"dk15_conv3_tied",
                   Spec(97, 60, 2, 4, 3, true, true, HF::kNumHeadsOnly, DType::kF32)},
        OracleCase{"one_head_conv5", Spec(50, 36, 3, 1, 5, true, false, HF::kBoth, DType::kF32)},
        OracleCase{"no_lower_bound_conv1",
                   Spec(61, 48, 2, 3, 1, false, false, HF::kExpandRatioOnly, DType::kF32)},
        OracleCase{"no_conv_bf16",
                   Spec(70, 64, 2, 2, 0, true, false, HF::kBoth, DType::kBF16, 100)},
        OracleCase{"conv2_f16_tied", Spec(33, 40, 4, 5, 2, true, true, HF::kBoth, DType::kF16)}),
    [](const ::testing::TestParamInfo<OracleCase>& param_info) { return param_info.param.name; });

TEST(ForwardPass, RejectsBadBatchesAndChangesNothing) {
  Engine engine(AwkwardModel());
  const SlotId slot = *engine.pool->Allocate();
  engine.SetRandomState(slot, 9);
  const std::vector<float> before = engine.State(slot);
  const std::vector<int32_t> good = {1, 2, 3};
  const std::vector<int32_t> bad = {1, 97, 3};
  const std::vector<int32_t> negative = {-1};
  const std::vector<int32_t> empty;

  auto expect_invalid = [&](absl::StatusOr<DeviceTensor> result, const std::string& needle) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
  };
  SequenceTokens seq{slot, bad};
  expect_invalid(engine.chunked->Prefill({&seq, 1}, LogitsFor::kLastToken),
                 "token id 97 at position 1 of sequence 0");
  seq.tokens = negative;
  expect_invalid(engine.chunked->Prefill({&seq, 1}, LogitsFor::kLastToken), "token id -1");
  seq.tokens = empty;
  expect_invalid(engine.chunked->Prefill({&seq, 1}, LogitsFor::kLastToken), "is empty");
  expect_invalid(engine.chunked->Prefill({}, LogitsFor::kLastToken), "empty batch");
  SequenceTokens unallocated{5, good};
  expect_invalid(engine.chunked->Prefill({&unallocated, 1}, LogitsFor::kLastToken),
                 "slot 5, which is not allocated");
  std::vector<SequenceTokens> twice = {{slot, good}, {slot, good}};
  expect_invalid(engine.chunked->Prefill(twice, LogitsFor::kLastToken), "appears twice");
  const std::vector<int32_t> too_long(513, 1);
  seq.tokens = too_long;
  expect_invalid(engine.chunked->Prefill({&seq, 1}, LogitsFor::kLastToken),
                 "513 tokens, at most 512");
  const int32_t bad_id = 1000;
  expect_invalid(engine.chunked->Decode({&slot, 1}, {&bad_id, 1}), "token id 1000");
  EXPECT_EQ(engine.State(slot), before);
}

TEST(Generation, ScoreEqualsLogSoftmaxOfPrefillLogits) {
  Engine engine(AwkwardModel(), /*max_tokens=*/16);
  const std::vector<int32_t> ids = RandomIds(40, 97, 12);  // longer than one piece of 16
  absl::StatusOr<std::vector<float>> scores = ScoreSequence(*engine.chunked, ids);
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->size(), ids.size() - 1);
  testing::NaiveHgrn2 oracle(AwkwardModel());  // same spec, same seed: the same model
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const std::vector<double> logits = oracle.Step(ids[t]);
    double max_logit = logits[0];
    for (double value : logits) max_logit = std::max(max_logit, value);
    double sum = 0.0;
    for (double value : logits) sum += std::exp(value - max_logit);
    const double expected = logits[ids[t + 1]] - max_logit - std::log(sum);
    EXPECT_NEAR((*scores)[t], expected, 1e-4 * std::max(1.0, std::abs(expected))) << "t " << t;
  }
  EXPECT_EQ(engine.pool->num_free(), engine.pool->num_slots());
}

TEST(Generation, SeededSamplingIsReproducibleAndGreedyMatchesArgmax) {
  Engine engine(AwkwardModel());
  const std::vector<int32_t> prompt = RandomIds(20, 97, 13);
  SamplingParams sampling;
  sampling.temperature = 0.9f;
  sampling.top_p = 0.95f;
  sampling.seed = 1234;
  StoppingParams stopping;
  stopping.max_new_tokens = 30;
  stopping.ignore_eos = true;
  auto ids = [&](const SamplingParams& params) {
    absl::StatusOr<GenerationResult> result =
        GenerateSequence(*engine.chunked, prompt, params, stopping);
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<int32_t> out;
    for (const SampledToken& token : result->tokens) out.push_back(token.id);
    return out;
  };
  const std::vector<int32_t> first = ids(sampling);
  EXPECT_EQ(first.size(), 30u);
  EXPECT_EQ(ids(sampling), first);
  sampling.seed = 1235;
  EXPECT_NE(ids(sampling), first);

  // Greedy: each token is the argmax of the oracle's logits after the tokens before it.
  sampling.temperature = 0.0f;
  const std::vector<int32_t> greedy = ids(sampling);
  testing::NaiveHgrn2 oracle(AwkwardModel());
  std::vector<double> logits;
  for (int32_t id : prompt) logits = oracle.Step(id);
  for (int32_t id : greedy) {
    EXPECT_EQ(id, std::max_element(logits.begin(), logits.end()) - logits.begin());
    logits = oracle.Step(id);
  }
}

std::vector<int32_t> Ids(const GenerationResult& result) {
  std::vector<int32_t> ids;
  for (const SampledToken& token : result.tokens) ids.push_back(token.id);
  return ids;
}

// Greedy ids of `prompt`, max_new_tokens of them, EOS ignored.
std::vector<int32_t> GreedyIds(ForwardPass& pass, absl::Span<const int32_t> prompt,
                               int32_t max_new_tokens) {
  SamplingParams sampling;
  sampling.temperature = 0.0f;
  StoppingParams stopping;
  stopping.max_new_tokens = max_new_tokens;
  stopping.ignore_eos = true;
  absl::StatusOr<GenerationResult> result = GenerateSequence(pass, prompt, sampling, stopping);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  return Ids(*result);
}

// A position k in [2, size - 2) whose id is absent from ids[0..k), or -1: generation that stops
// on ids[k] must then stop at k, nowhere earlier, and visibly before the length limit.
int StopPosition(const std::vector<int32_t>& ids) {
  for (int k = static_cast<int>(ids.size()) - 3; k >= 2; --k) {
    if (std::find(ids.begin(), ids.begin() + k, ids[k]) == ids.begin() + k) return k;
  }
  return -1;
}

TEST(Generation, StopsOnAStopIdAndIncludesIt) {
  Engine engine(AwkwardModel());
  const std::vector<int32_t> prompt = RandomIds(9, 97, 14);
  const std::vector<int32_t> greedy = GreedyIds(*engine.chunked, prompt, 12);
  ASSERT_EQ(greedy.size(), 12u);
  const int k = StopPosition(greedy);
  ASSERT_GE(k, 2) << "greedy ids repeat too much to test stopping: " << absl::StrJoin(greedy, ",");

  SamplingParams sampling;
  sampling.temperature = 0.0f;
  StoppingParams stopping;
  stopping.max_new_tokens = 12;
  stopping.ignore_eos = true;
  stopping.stop_token_ids = {greedy[k]};
  absl::StatusOr<GenerationResult> result =
      GenerateSequence(*engine.chunked, prompt, sampling, stopping);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Ids(*result), std::vector<int32_t>(greedy.begin(), greedy.begin() + k + 1));
  EXPECT_EQ(result->finish_reason, FinishReason::kStop);
  EXPECT_EQ(engine.pool->num_free(), engine.pool->num_slots());
}

TEST(Generation, StopsOnTheModelsEosUnlessIgnored) {
  const std::filesystem::path dir = AwkwardModel();
  const std::vector<int32_t> prompt = RandomIds(9, 97, 15);
  std::vector<int32_t> greedy;
  {
    Engine engine(dir);
    ASSERT_NE(engine.model, nullptr);
    greedy = GreedyIds(*engine.chunked, prompt, 12);
  }
  ASSERT_EQ(greedy.size(), 12u);
  const int k = StopPosition(greedy);
  ASSERT_GE(k, 2) << "greedy ids repeat too much to test stopping: " << absl::StrJoin(greedy, ",");

  // The same weights under a config.json whose EOS is the k-th greedy token.
  const std::filesystem::path eos_dir = testing::MakeTempDir() / "model";
  std::filesystem::create_directories(eos_dir);
  std::filesystem::copy_file(dir / "model.safetensors", eos_dir / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  ASSERT_TRUE(config.contains("eos_token_id"));
  config["eos_token_id"] = greedy[k];
  std::ofstream(eos_dir / "config.json") << config.dump(2);
  Engine engine(eos_dir);
  ASSERT_NE(engine.model, nullptr);
  ASSERT_EQ(engine.model->config().eos_token_ids, std::vector<int32_t>{greedy[k]});

  SamplingParams sampling;
  sampling.temperature = 0.0f;
  StoppingParams stopping;
  stopping.max_new_tokens = 12;
  absl::StatusOr<GenerationResult> result =
      GenerateSequence(*engine.chunked, prompt, sampling, stopping);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Ids(*result), std::vector<int32_t>(greedy.begin(), greedy.begin() + k + 1));
  EXPECT_EQ(result->finish_reason, FinishReason::kEos);

  stopping.ignore_eos = true;
  result = GenerateSequence(*engine.chunked, prompt, sampling, stopping);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Ids(*result), greedy);
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  EXPECT_EQ(engine.pool->num_free(), engine.pool->num_slots());
}

TEST(Model, RejectsMissingWrongShapeAndUnexpectedTensors) {
  const std::filesystem::path dir = AwkwardModel();
  absl::StatusOr<WeightFile> file = WeightFile::Open(dir);
  ASSERT_TRUE(file.ok());
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : file->Names()) {
    const TensorView view = *file->Tensor(name);
    tensors.push_back({name, view.dtype, view.shape,
                       std::vector<std::byte>(view.bytes.begin(), view.bytes.end())});
  }
  const ModelConfig config = *ModelConfig::Load(dir);
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto load_with = [&](std::vector<TensorToWrite> edited) {
    const std::filesystem::path path = testing::MakeTempDir() / "model.safetensors";
    EXPECT_TRUE(WriteSafetensors(path, edited).ok());
    return Model::Create(config, *WeightFile::Open(path), *backend).status();
  };

  std::vector<TensorToWrite> missing = tensors;
  std::erase_if(missing, [](const TensorToWrite& t) {
    return t.name == "model.layers.1.attn.o_proj.weight";
  });
  absl::Status status = load_with(missing);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("model.layers.1.attn.o_proj.weight"));

  std::vector<TensorToWrite> wrong_shape = tensors;
  for (TensorToWrite& t : wrong_shape) {
    if (t.name == "model.layers.0.mlp.up_proj.weight") std::swap(t.shape[0], t.shape[1]);
  }
  status = load_with(wrong_shape);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("model.layers.0.mlp.up_proj.weight"));

  std::vector<TensorToWrite> extra = tensors;
  extra.push_back(
      {"model.layers.0.attn.q_conv1d.bias", DType::kF32, {60}, std::vector<std::byte>(240)});
  status = load_with(extra);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("unexpected tensor"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("q_conv1d.bias"));

  std::vector<TensorToWrite> integer = tensors;
  for (TensorToWrite& t : integer) {
    if (t.name == "model.norm.weight") t.dtype = DType::kI32;
  }
  status = load_with(integer);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("model.norm.weight"));
}

TEST(Model, LowerBoundsAreSoftmaxCumsumMinusFirst) {
  // Two layers, one channel: raw (0, ln 3) -> softmax (1/4, 3/4) -> cumsum (1/4, 1) -> minus 1/4.
  const std::vector<float> raw = {0.0f, std::log(3.0f)};
  const std::vector<float> bounds = TransformLowerBounds(raw, 2, 1);
  EXPECT_FLOAT_EQ(bounds[0], 0.0f);
  EXPECT_FLOAT_EQ(bounds[1], 0.75f);
}

}  // namespace
}  // namespace hgrn2

namespace hgrn2 {
namespace {

TEST(ForwardPass, DefaultPrefillFormIsTheBackendsPreference) {
  const std::filesystem::path dir = testing::MakeTempDir() / "model";
  testing::WriteRandomModel(dir, {});
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::unique_ptr<Model> model = *Model::Load(dir, *backend);
  std::unique_ptr<StatePool> pool = *StatePool::Create(*backend, model->config(), 1);
  std::unique_ptr<ForwardPass> pass = *ForwardPass::Create(*model, *pool, {});
  EXPECT_EQ(pass->options().prefill_chunk_size, backend->preferred_prefill_chunk_size());
  ForwardPass::Options bad;
  bad.prefill_chunk_size = -2;
  testing::ExpectError(ForwardPass::Create(*model, *pool, bad).status(),
                       absl::StatusCode::kInvalidArgument, {"forward pass", "prefill_chunk_size"});
}

}  // namespace
}  // namespace hgrn2

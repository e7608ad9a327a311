// hgrn2-bench: engine-level throughput with no server — decode steps at several batch sizes and
// prompt prefill, against the card's measured copy bandwidth and GEMM rate.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/backend.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/model_config.h"
#include "engine/checkpoint/model_presets.h"
#include "engine/engine.h"
#include "engine/model/forward_pass.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "engine/sampling/sampler.h"
#include "nlohmann/json.hpp"
#include "tools/bench/scenarios.h"

namespace hgrn2 {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Flags {
  std::string preset = "1.3b";
  std::string model_dir;
  std::string device = "auto";
  std::string dtype = "bf16";
  std::vector<int> batches = {1, 16, 64, 256, 512, 1024};
  std::vector<std::string> prefills = {"1x2048", "8x2048"};
  int steps = 20;
  bool no_graphs = false;
  bool one_pass_sampling = true;  // the backend's defaults; --no-... to compare with the old
  bool small_batch_gemv = true;
  std::string gpu_wait = "spin";
  bool skip_hardware = false;
  bool breakdown = false;
  // "tables": decode and prefill tables; "decode": scheduled decoding against plain decode steps;
  // "mixed": Poisson arrivals of mixed requests through the engine.
  std::string scenario = "tables";
  DType state_dtype = DType::kF32;
  int scenario_batch = 256;
  int scenario_steps = 64;
  bench::MixedScenario mixed;
  std::string json_path;
};

// Bytes of weights a decode step reads, in the compute dtype (lower bounds in float32); with
// `fp8_projections`, the projections as one byte each plus a float scale per row.
int64_t WeightBytes(const ModelConfig& c, DType dtype, bool fp8_projections) {
  const int64_t d = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t size = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t projections = 3 * d * d + d * d + 3 * inter * d;
  const int64_t projection_bytes =
      fp8_projections ? projections + 4 * (3 * d + d + 2 * inter + d) : projections * size;
  const int64_t per_layer = projection_bytes + (3 * d + 3 * d * c.conv_window()) * size;
  // + lm_head and the final norm; the embedding table is read one row per token, not whole.
  return c.num_layers * per_layer + (c.vocab_size * d + d) * size +
         (c.use_lower_bound ? c.num_layers * d * 4 : 0);
}

// Multiply-accumulate pairs per prompt token (the projections and the MLP), times two.
double FlopsPerToken(const ModelConfig& c) {
  const double d = static_cast<double>(c.hidden_size);
  return 2.0 * c.num_layers * (4 * d * d + 3 * d * c.intermediate_size);
}

struct Hardware {
  double copy_bytes_per_second = 0;  // read + write
  double gemm_flops_per_second = 0;
};

absl::StatusOr<Hardware> MeasureHardware(Backend& backend, bool big) {
  Hardware hw;
  const size_t bytes = big ? size_t{1} << 30 : size_t{64} << 20;
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer a, backend.Allocate(bytes));
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer b, backend.Allocate(bytes));
  HGRN2_RETURN_IF_ERROR(backend.Fill(a.data(), 0x3C, bytes));
  for (int i = 0; i < 2; ++i)
    HGRN2_RETURN_IF_ERROR(backend.CopyOnDevice(b.data(), a.data(), bytes));
  HGRN2_RETURN_IF_ERROR(backend.Synchronize());
  const int reps = 10;
  Clock::time_point start = Clock::now();
  for (int i = 0; i < reps; ++i)
    HGRN2_RETURN_IF_ERROR(backend.CopyOnDevice(b.data(), a.data(), bytes));
  HGRN2_RETURN_IF_ERROR(backend.Synchronize());
  hw.copy_bytes_per_second = 2.0 * static_cast<double>(bytes) * reps / Seconds(start);

  const int64_t n = big ? 8192 : 256;
  const DType dtype = backend.compute_dtype();
  const size_t matrix_bytes = static_cast<size_t>(n * n) * DTypeSize(dtype);
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer x, backend.Allocate(matrix_bytes));
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer w, backend.Allocate(matrix_bytes));
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer y, backend.Allocate(matrix_bytes));
  // Not zeros: 0x3C3C is 0.0115 in bf16 and 1.06 in f16, a small normal number in f32.
  HGRN2_RETURN_IF_ERROR(backend.Fill(x.data(), 0x3C, matrix_bytes));
  HGRN2_RETURN_IF_ERROR(backend.Fill(w.data(), 0x3C, matrix_bytes));
  const DeviceTensor tx = x.Matrix(dtype, n, n), tw = w.Matrix(dtype, n, n),
                     ty = y.Matrix(dtype, n, n);
  for (int i = 0; i < 2; ++i) HGRN2_RETURN_IF_ERROR(backend.Gemm(tx, tw, ty));
  HGRN2_RETURN_IF_ERROR(backend.Synchronize());
  start = Clock::now();
  for (int i = 0; i < reps; ++i) HGRN2_RETURN_IF_ERROR(backend.Gemm(tx, tw, ty));
  HGRN2_RETURN_IF_ERROR(backend.Synchronize());
  hw.gemm_flops_per_second = 2.0 * n * n * n * reps / Seconds(start);
  return hw;
}

// Times each op of one forward pass alone (back-to-back calls), for `seqs` sequences in slots
// 0..seqs-1 of `pool` advancing by `tokens` each (1: the decode step; more: prefill), and prints
// microseconds per call and per pass.
absl::Status OpBreakdown(Backend& backend, const Model& model, StatePool& pool, int seqs,
                         int tokens) {
  const int batch = seqs * tokens;  // rows of the activations
  const ModelConfig& c = model.config();
  const DType dtype = backend.compute_dtype();
  const int64_t d = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  std::vector<DeviceBuffer> buffers;
  auto make = [&](int64_t cols, DType type) -> absl::StatusOr<DeviceTensor> {
    HGRN2_ASSIGN_OR_RETURN(DeviceBuffer buffer,
                           backend.Allocate(static_cast<size_t>(batch * cols) * DTypeSize(type)));
    HGRN2_RETURN_IF_ERROR(backend.Fill(buffer.data(), 0x3C, buffer.size()));
    DeviceTensor t = buffer.Matrix(type, batch, cols);
    buffers.push_back(std::move(buffer));
    return t;
  };
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor x, make(d, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor residual, make(d, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor qfi, make(3 * d, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor mixed, make(d, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor gate_up, make(2 * inter, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor activated, make(inter, dtype));
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, make(c.vocab_size, DType::kF32));
  std::vector<int32_t> slot_ids(static_cast<size_t>(seqs));
  std::iota(slot_ids.begin(), slot_ids.end(), 0);
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer slots, backend.Allocate(slot_ids.size() * 4));
  HGRN2_RETURN_IF_ERROR(backend.CopyToDevice(slots.data(), slot_ids.data(), slot_ids.size() * 4));
  const int64_t layer = std::min<int64_t>(1, c.num_layers - 1);
  const LayerWeights& w = model.layer(layer);
  const Hgrn2LayerOp op = MakeLayerOp(model, pool, layer);
  const auto* slot_ptr = static_cast<const int32_t*>(slots.data());
  std::vector<int32_t> offsets(static_cast<size_t>(seqs) + 1);
  for (int b = 0; b <= seqs; ++b) offsets[b] = b * tokens;
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer offsets_buffer, backend.Allocate(offsets.size() * 4));
  HGRN2_RETURN_IF_ERROR(
      backend.CopyToDevice(offsets_buffer.data(), offsets.data(), offsets.size() * 4));
  const auto* offsets_ptr = static_cast<const int32_t*>(offsets_buffer.data());
  struct Op {
    const char* name;
    int per_step;
    std::function<absl::Status()> run;
  };
  const int layers = static_cast<int>(c.num_layers);
  const std::vector<Op> ops = {
      {"gemm qfi", layers, [&] { return backend.Gemm(x, w.qfi_proj, qfi); }},
      {tokens == 1 ? "hgrn2 step" : "hgrn2 prefill", layers,
       [&] {
         return tokens == 1 ? backend.Hgrn2Step(op, slot_ptr, qfi, mixed)
                            : backend.Hgrn2Prefill(op, seqs, slot_ptr, offsets_ptr, 0, qfi, mixed);
       }},
      {"rmsnorm", layers, [&] { return backend.RmsNorm(mixed, w.g_norm, 1e-6f, x); }},
      {"gemm o", layers, [&] { return backend.Gemm(x, w.o_proj, mixed); }},
      {"add-rmsnorm", 2 * layers,
       [&] { return backend.AddRmsNorm(residual, mixed, w.mlp_norm, 1e-6f, x); }},
      {"gemm gate_up", layers, [&] { return backend.Gemm(x, w.gate_up_proj, gate_up); }},
      {"swiglu", layers, [&] { return backend.SwiGlu(gate_up, activated); }},
      {"gemm down", layers, [&] { return backend.Gemm(activated, w.down_proj, mixed); }},
      {"gemm lm_head", 1,
       [&] { return backend.Gemm(x.Rows(0, seqs), model.lm_head(), logits.Rows(0, seqs)); }},
  };
  const std::string name = absl::StrCat(seqs, "x", tokens);
  std::printf("\nbreakdown %s %-14s %10s %8s %12s\n", name.c_str(), "op", "us/call", "calls",
              "us/pass");
  double total = 0;
  for (const Op& o : ops) {
    for (int i = 0; i < 3; ++i) HGRN2_RETURN_IF_ERROR(o.run());
    HGRN2_RETURN_IF_ERROR(backend.Synchronize());
    const int reps = tokens == 1 ? 50 : 5;
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < reps; ++i) HGRN2_RETURN_IF_ERROR(o.run());
    HGRN2_RETURN_IF_ERROR(backend.Synchronize());
    const double us = Seconds(start) / reps * 1e6;
    total += us * o.per_step;
    std::printf("breakdown %s %-14s %10.1f %8d %12.1f\n", name.c_str(), o.name, us, o.per_step,
                us * o.per_step);
  }
  std::printf("breakdown %s %-14s %10s %8s %12.1f\n", name.c_str(), "sum", "", "", total);
  return absl::OkStatus();
}

std::vector<int32_t> RandomTokens(int64_t count, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (auto& id : ids) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((seed >> 33) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

// The engine-level scenarios of tools/bench/scenarios.h on this backend.
int RunScenario(const Flags& flags, const Model& model, nlohmann::json& report) {
  auto fail = [](const absl::Status& status) {
    std::cerr << "hgrn2-bench: " << status << "\n";
    return 1;
  };
  EngineOptions options;
  options.max_running = flags.scenario_batch;
  options.state_dtype = flags.state_dtype;
  if (flags.scenario == "decode") {
    absl::StatusOr<bench::DecodeComparison> comparison =
        bench::CompareDecode(model, options, flags.scenario_batch, flags.scenario_steps);
    if (!comparison.ok()) return fail(comparison.status());
    std::fputs(bench::FormatDecodeComparison(*comparison).c_str(), stdout);
    report["scenario_decode"] = {{"batch", comparison->batch},
                                 {"steps", comparison->steps},
                                 {"engine_tokens_per_s", comparison->engine_tokens_per_second},
                                 {"direct_tokens_per_s", comparison->direct_tokens_per_second},
                                 {"ratio", comparison->ratio}};
  } else {
    options.max_queued = std::max(options.max_queued, flags.mixed.num_requests);
    // The server's scheduling (its --max-prefill-token-budget default), for the served/engine row.
    options.max_prefill_token_budget = EngineOptions::kAutoPrefillBudget;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(model, options);
    if (!engine.ok()) return fail(engine.status());
    absl::StatusOr<bench::MixedResult> result = bench::RunMixedScenario(**engine, flags.mixed);
    if (!result.ok()) return fail(result.status());
    std::fputs(bench::FormatMixedResult(flags.mixed, *result).c_str(), stdout);
    auto summary = [](const bench::LatencySummary& l) {
      return nlohmann::json{{"p50_ms", l.p50 * 1e3},
                            {"p90_ms", l.p90 * 1e3},
                            {"p99_ms", l.p99 * 1e3},
                            {"mean_ms", l.mean * 1e3}};
    };
    report["scenario_mixed"] = {{"requests", flags.mixed.num_requests},
                                {"concurrency", flags.mixed.concurrency},
                                {"duration_s", flags.mixed.duration_seconds},
                                {"rate_per_s", flags.mixed.arrivals_per_second},
                                {"completed", result->completed},
                                {"failed", result->failed},
                                {"output_tokens_per_s", result->output_tokens_per_second},
                                {"total_tokens_per_s", result->total_tokens_per_second},
                                {"ttft", summary(result->time_to_first_token)},
                                {"inter_token", summary(result->inter_token)},
                                {"end_to_end", summary(result->end_to_end)}};
    if (result->failed > 0) {
      return fail(absl::InternalError(absl::StrCat(result->failed, " requests did not complete")));
    }
  }
  if (!flags.json_path.empty()) {
    std::ofstream out(flags.json_path);
    out << report.dump(2) << "\n";
  }
  return 0;
}

int Run(const Flags& flags) {
  auto fail = [](const absl::Status& status) {
    std::cerr << "hgrn2-bench: " << status << "\n";
    return 1;
  };
  const absl::StatusOr<WeightPrecision> precision = ParseWeightPrecision(flags.dtype);
  if (!precision.ok()) return fail(precision.status());
  const DType dtype = precision->compute_dtype;
  const ModelLoadOptions load_options{.fp8_weights = precision->fp8_weights};
  absl::StatusOr<CudaBackendOptions::Wait> wait = GpuWaitNamed(flags.gpu_wait);
  if (!wait.ok()) return fail(wait.status());
  absl::StatusOr<std::unique_ptr<Backend>> backend_or =
      MakeBackend(flags.device, {.compute_dtype = dtype,
                                 .use_graphs = !flags.no_graphs,
                                 .one_pass_sampling = flags.one_pass_sampling,
                                 .small_batch_gemv = flags.small_batch_gemv,
                                 .wait = *wait});
  if (!backend_or.ok()) return fail(backend_or.status());
  std::unique_ptr<Backend> backend = *std::move(backend_or);
  const bool gpu = backend->name() == "cuda";

  nlohmann::json report;
  report["device"] = std::string(backend->name());
  report["dtype"] = std::string(DTypeName(backend->compute_dtype()));
  report["fp8_weights"] = precision->fp8_weights;
  report["graphs"] = !flags.no_graphs;
  report["state_dtype"] = std::string(DTypeName(flags.state_dtype));

  Hardware hw;
  if (!flags.skip_hardware) {
    absl::StatusOr<Hardware> measured = MeasureHardware(*backend, gpu);
    if (!measured.ok()) return fail(measured.status());
    hw = *measured;
    std::printf("copy bandwidth %.0f GB/s (read + write), %s GEMM %.1f TFLOP/s\n",
                hw.copy_bytes_per_second / 1e9, std::string(DTypeName(dtype)).c_str(),
                hw.gemm_flops_per_second / 1e12);
    report["copy_gb_per_s"] = hw.copy_bytes_per_second / 1e9;
    report["gemm_tflop_per_s"] = hw.gemm_flops_per_second / 1e12;
  }

  std::unique_ptr<Model> model;
  const Clock::time_point load_start = Clock::now();
  if (!flags.model_dir.empty()) {
    absl::StatusOr<std::unique_ptr<Model>> loaded =
        Model::Load(flags.model_dir, *backend, load_options);
    if (!loaded.ok()) return fail(loaded.status());
    model = *std::move(loaded);
    report["model"] = flags.model_dir;
  } else {
    absl::StatusOr<ModelConfig> config = ModelPreset(flags.preset);
    if (!config.ok()) return fail(config.status());
    absl::StatusOr<std::unique_ptr<Model>> created =
        Model::CreateRandom(*config, *backend, kPresetSeed, load_options);
    if (!created.ok()) return fail(created.status());
    model = *std::move(created);
    report["preset"] = flags.preset;
  }
  if (flags.scenario != "tables") return RunScenario(flags, *model, report);
  const ModelConfig& c = model->config();
  const double weight_bytes =
      static_cast<double>(WeightBytes(c, backend->compute_dtype(), precision->fp8_weights));
  const double state_bytes =
      static_cast<double>(c.state_bytes()) / (flags.state_dtype == DType::kBF16 ? 2.0 : 1.0);
  std::printf(
      "model: V %lld D %lld L %lld H %lld dk %lld I %lld; weights %.2f GB, state %.1f MiB; "
      "loaded in %.1f s\n",
      static_cast<long long>(c.vocab_size), static_cast<long long>(c.hidden_size),
      static_cast<long long>(c.num_layers), static_cast<long long>(c.num_heads),
      static_cast<long long>(c.key_dim), static_cast<long long>(c.intermediate_size),
      weight_bytes / 1e9, state_bytes / (1 << 20), Seconds(load_start));

  std::vector<int> batches = flags.batches;
  std::sort(batches.begin(), batches.end());
  int64_t max_prefill_tokens = 0;
  std::vector<std::pair<int, int>> prefills;
  for (const std::string& spec : flags.prefills) {
    int seqs = 0, length = 0;
    if (std::sscanf(spec.c_str(), "%dx%d", &seqs, &length) != 2 || seqs <= 0 || length <= 0) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("--prefill entries look like 8x2048 (sequences x tokens), got ", spec)));
    }
    prefills.emplace_back(seqs, length);
    max_prefill_tokens = std::max<int64_t>(max_prefill_tokens, int64_t{seqs} * length);
  }

  // Decode: one pool sized for the largest batch that fits (halving on out-of-memory).
  nlohmann::json decode_rows = nlohmann::json::array();
  std::printf("\n%-8s %10s %12s %12s %10s %14s %10s\n", "decode B", "ms/step", "tokens/s",
              "+sampling", "limit ms", "% of limit", "first ms");
  std::unique_ptr<StatePool> pool;
  int max_batch = batches.empty() ? 1 : batches.back();
  while (max_batch > 0) {
    absl::StatusOr<std::unique_ptr<StatePool>> created =
        StatePool::Create(*backend, c, max_batch, flags.state_dtype);
    if (created.ok()) {
      pool = *std::move(created);
      break;
    }
    max_batch /= 2;
  }
  if (pool == nullptr) return fail(absl::ResourceExhaustedError("no room for a state pool"));
  ForwardPass::Options options;
  options.max_sequences = std::max(max_batch, 8);
  options.max_tokens = std::max<int64_t>(max_prefill_tokens, std::max(max_batch, 512));
  absl::StatusOr<std::unique_ptr<ForwardPass>> pass_or =
      ForwardPass::Create(*model, *pool, options);
  if (!pass_or.ok()) return fail(pass_or.status());
  ForwardPass& pass = **pass_or;

  for (int batch : batches) {
    if (batch > max_batch) {
      std::printf("%-8d (state pool for %d sequences does not fit)\n", batch, batch);
      continue;
    }
    std::vector<SlotId> slots;
    for (int b = 0; b < batch; ++b) slots.push_back(*pool->Allocate());
    // A few prompt tokens each, so the states are not zero.
    const std::vector<int32_t> prompt = RandomTokens(int64_t{batch} * 4, c.vocab_size, batch);
    for (int first = 0; first < batch; first += options.max_sequences) {
      std::vector<SequenceTokens> seqs;
      for (int b = first; b < std::min(batch, first + options.max_sequences); ++b) {
        seqs.push_back({slots[b], absl::MakeConstSpan(prompt).subspan(b * 4, 4)});
      }
      if (absl::StatusOr<DeviceTensor> r = pass.Prefill(seqs, LogitsFor::kLastToken); !r.ok()) {
        return fail(r.status());
      }
    }
    std::vector<int32_t> tokens = RandomTokens(batch, c.vocab_size, 7 + batch);
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    std::vector<Sampler> samplers;
    samplers.reserve(batch);
    for (int b = 0; b < batch; ++b)
      samplers.emplace_back(greedy, c.vocab_size, absl::Span<const int32_t>());
    std::vector<Sampler*> sampler_ptrs;
    for (Sampler& s : samplers) sampler_ptrs.push_back(&s);
    std::vector<SampledToken> sampled(batch);

    auto step = [&](bool sample) -> absl::Status {
      HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, pass.Decode(slots, tokens));
      if (sample) {
        HGRN2_RETURN_IF_ERROR(backend->Sample(logits, sampler_ptrs, absl::MakeSpan(sampled)));
        for (int b = 0; b < batch; ++b) tokens[b] = sampled[b].id;
      }
      return absl::OkStatus();
    };
    // The first step at a batch size records its graph and tunes its GEMM shapes.
    const Clock::time_point cold_start = Clock::now();
    if (absl::Status s = step(false); !s.ok()) return fail(s);
    if (absl::Status s = backend->Synchronize(); !s.ok()) return fail(s);
    const double cold = Seconds(cold_start);
    double times[2] = {0, 0};
    for (int sample = 0; sample < 2; ++sample) {
      for (int i = 0; i < 3; ++i) {
        if (absl::Status s = step(sample == 1); !s.ok()) return fail(s);
      }
      if (absl::Status s = backend->Synchronize(); !s.ok()) return fail(s);
      const Clock::time_point start = Clock::now();
      for (int i = 0; i < flags.steps; ++i) {
        if (absl::Status s = step(sample == 1); !s.ok()) return fail(s);
      }
      if (absl::Status s = backend->Synchronize(); !s.ok()) return fail(s);
      times[sample] = Seconds(start) / flags.steps;
    }
    for (SlotId slot : slots) (void)pool->Free(slot);
    const double limit = hw.copy_bytes_per_second > 0
                             ? (weight_bytes + 2.0 * batch * state_bytes) / hw.copy_bytes_per_second
                             : 0.0;
    std::printf("%-8d %10.3f %12.0f %12.0f %10.3f %13.1f%% %10.1f\n", batch, times[0] * 1e3,
                batch / times[0], batch / times[1], limit * 1e3,
                limit > 0 ? 100.0 * limit / times[0] : 0.0, cold * 1e3);
    decode_rows.push_back({{"batch", batch},
                           {"ms_per_step", times[0] * 1e3},
                           {"tokens_per_s", batch / times[0]},
                           {"ms_per_step_with_sampling", times[1] * 1e3},
                           {"tokens_per_s_with_sampling", batch / times[1]},
                           {"limit_ms", limit * 1e3},
                           {"fraction_of_limit", limit > 0 ? limit / times[0] : 0.0},
                           {"first_step_ms", cold * 1e3}});
  }
  report["decode"] = decode_rows;
  if (flags.breakdown) {
    for (const auto& [seqs, tokens] : {std::pair{1, 1}, {256, 1}, {1, 2048}, {8, 2048}}) {
      if (seqs > pool->num_slots() || seqs * tokens > options.max_tokens) continue;
      if (absl::Status s = OpBreakdown(*backend, *model, *pool, seqs, tokens); !s.ok()) {
        return fail(s);
      }
    }
  }

  nlohmann::json prefill_rows = nlohmann::json::array();
  std::printf("\n%-10s %10s %12s %10s %14s\n", "prefill", "ms", "tokens/s", "limit ms",
              "% of limit");
  for (const auto& [seqs, length] : prefills) {
    if (seqs > pool->num_slots()) {
      std::printf("%dx%d (needs %d slots)\n", seqs, length, seqs);
      continue;
    }
    std::vector<SlotId> slots;
    for (int b = 0; b < seqs; ++b) slots.push_back(*pool->Allocate());
    const std::vector<int32_t> prompt = RandomTokens(int64_t{seqs} * length, c.vocab_size, 99);
    std::vector<SequenceTokens> batch;
    for (int b = 0; b < seqs; ++b) {
      batch.push_back({slots[b], absl::MakeConstSpan(prompt).subspan(int64_t{b} * length, length)});
    }
    auto run = [&]() -> absl::Status {
      for (SlotId slot : slots) HGRN2_RETURN_IF_ERROR(pool->Reset(slot));
      return pass.Prefill(batch, LogitsFor::kLastToken).status();
    };
    if (absl::Status s = run(); !s.ok()) return fail(s);
    if (absl::Status s = backend->Synchronize(); !s.ok()) return fail(s);
    const int reps = gpu ? 5 : 1;
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < reps; ++i) {
      if (absl::Status s = run(); !s.ok()) return fail(s);
    }
    if (absl::Status s = backend->Synchronize(); !s.ok()) return fail(s);
    const double seconds = Seconds(start) / reps;
    for (SlotId slot : slots) (void)pool->Free(slot);
    const double tokens = static_cast<double>(seqs) * length;
    const double limit =
        hw.gemm_flops_per_second > 0 ? tokens * FlopsPerToken(c) / hw.gemm_flops_per_second : 0.0;
    const std::string name = absl::StrCat(seqs, "x", length);
    std::printf("%-10s %10.2f %12.0f %10.2f %13.1f%%\n", name.c_str(), seconds * 1e3,
                tokens / seconds, limit * 1e3, limit > 0 ? 100.0 * limit / seconds : 0.0);
    prefill_rows.push_back({{"shape", name},
                            {"ms", seconds * 1e3},
                            {"tokens_per_s", tokens / seconds},
                            {"limit_ms", limit * 1e3},
                            {"fraction_of_limit", limit > 0 ? limit / seconds : 0.0}});
  }
  report["prefill"] = prefill_rows;

  if (!flags.json_path.empty()) {
    std::ofstream out(flags.json_path);
    out << report.dump(2) << "\n";
    if (!out) return fail(absl::UnavailableError(absl::StrCat("cannot write ", flags.json_path)));
  }
  return 0;
}

}  // namespace
}  // namespace hgrn2

int main(int argc, char** argv) {
  hgrn2::Flags flags;
  CLI::App app{"hgrn2-bench: engine throughput (decode and prefill) without a server"};
  app.add_option("--preset", flags.preset, "Random weights of a known shape: 1.3b, 370m, tiny");
  app.add_option("--model", flags.model_dir, "A checkpoint folder instead of a preset");
  app.add_option("--device", flags.device, "cuda, cpu or auto")
      ->check(CLI::IsMember({"cuda", "cpu", "auto"}));
  app.add_option("--dtype", flags.dtype,
                 "Weights and activations: bf16, f16 or f32; or fp8 (FP8 projections, bf16 "
                 "activations)");
  app.add_option("--batches", flags.batches, "Decode batch sizes")->delimiter(',');
  app.add_option("--prefill", flags.prefills, "Prefill shapes, SEQSxTOKENS")->delimiter(',');
  app.add_option("--steps", flags.steps, "Timed decode steps per batch size")
      ->check(CLI::PositiveNumber);
  std::string state_dtype = "f32";
  app.add_option("--state-dtype", state_dtype, "recurrent states: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_flag("--no-graphs", flags.no_graphs, "Do not record decode steps as CUDA graphs");
  app.add_flag("--one-pass-sampling,!--no-one-pass-sampling", flags.one_pass_sampling,
               "Sample with the one-pass cluster sampler (default; --no-: the one-block sampler)");
  app.add_flag("--small-batch-gemv,!--no-small-batch-gemv", flags.small_batch_gemv,
               "Let the GEMM tuner pick the small-batch GEMV (default; --no-: cuBLASLt only)");
  app.add_option("--gpu-wait", flags.gpu_wait, "How the host waits for the device: block or spin")
      ->check(CLI::IsMember({"block", "spin"}))
      ->capture_default_str();
  app.add_flag("--skip-hardware", flags.skip_hardware, "Skip the bandwidth and GEMM measurements");
  app.add_flag("--breakdown", flags.breakdown,
               "Also time each op alone: decode at B = 1 and 256, prefill of 1x2048 and 8x2048");
  app.add_option("--scenario", flags.scenario,
                 "tables (decode and prefill), decode (scheduled against plain steps) or mixed "
                 "(Poisson arrivals through the engine)")
      ->check(CLI::IsMember({"tables", "decode", "mixed"}));
  app.add_option("--scenario-batch", flags.scenario_batch,
                 "decode: sequences; mixed: the engine's max running sequences")
      ->check(CLI::PositiveNumber);
  app.add_option("--scenario-steps", flags.scenario_steps, "decode: tokens per sequence")
      ->check(CLI::PositiveNumber);
  app.add_option("--requests", flags.mixed.num_requests, "mixed: requests in all");
  app.add_option("--rate", flags.mixed.arrivals_per_second, "mixed: arrivals per second");
  app.add_option("--prompt-min", flags.mixed.min_prompt_tokens, "mixed: shortest prompt");
  app.add_option("--prompt-max", flags.mixed.max_prompt_tokens, "mixed: longest prompt");
  app.add_option("--output-min", flags.mixed.min_output_tokens, "mixed: shortest output");
  app.add_option("--output-max", flags.mixed.max_output_tokens, "mixed: longest output");
  app.add_option("--concurrency", flags.mixed.concurrency,
                 "mixed: a closed loop of this many requests in flight instead of arrivals");
  app.add_option("--duration", flags.mixed.duration_seconds, "mixed closed loop: measured seconds");
  app.add_option("--warmup-seconds", flags.mixed.warmup_seconds,
                 "mixed closed loop: seconds before the measurement");
  app.add_option("--json", flags.json_path, "Also write the results as JSON to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  flags.state_dtype = state_dtype == "bf16" ? hgrn2::DType::kBF16 : hgrn2::DType::kF32;
  if (absl::Status valid = flags.mixed.Validate(); !valid.ok()) {
    std::cerr << "hgrn2-bench: " << valid.message() << "\n";
    return 2;
  }
  return hgrn2::Run(flags);
}

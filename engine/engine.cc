// Engine: validation of requests on the caller's thread and the hand-off to the scheduler thread.
#include "engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/scheduler/scheduler.h"

namespace hgrn2 {
namespace {

std::unique_ptr<Sequence> NewSequence(RequestId id, int32_t priority, absl::Time deadline,
                                      std::vector<int32_t> input) {
  auto sequence = std::make_unique<Sequence>();
  sequence->id = id;
  sequence->priority = priority;
  sequence->deadline = deadline;
  sequence->input = std::move(input);
  return sequence;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Model& model,
                                                       const EngineOptions& options) {
  HGRN2_RETURN_IF_ERROR(options.Validate());
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler, Scheduler::Create(model, options));
  return std::unique_ptr<Engine>(new Engine(model, options, std::move(scheduler)));
}

Engine::Engine(const Model& model, const EngineOptions& options,
               std::unique_ptr<Scheduler> scheduler)
    : model_(model), options_(options), scheduler_(std::move(scheduler)) {}

Engine::~Engine() { Stop(); }

void Engine::Stop() { scheduler_->Stop(); }

size_t Engine::state_bytes() const { return scheduler_->state_bytes(); }

std::shared_ptr<HostStatePool> Engine::MakeHostStatePool(size_t max_states) const {
  return std::make_shared<HostStatePool>(model_.backend().shared_host_allocator(), state_bytes(),
                                         max_states);
}

EngineStats Engine::Stats() const { return scheduler_->Stats(); }

absl::Status Engine::Cancel(RequestId id) { return scheduler_->Cancel(id); }

absl::Status Engine::ValidateTokens(absl::Span<const int32_t> tokens,
                                    absl::string_view what) const {
  if (static_cast<int64_t>(tokens.size()) > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(what, " of ", tokens.size(),
                                                   " tokens is longer than max_prompt_tokens (",
                                                   options_.max_prompt_tokens, ")"));
  }
  const int64_t vocab = model_.config().vocab_size;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": token id ", tokens[t], " at position ", t,
                       " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::ValidateInitialState(const SequenceState& state,
                                          absl::string_view what) const {
  const int64_t vocab = model_.config().vocab_size;
  if (state.view().size() != state_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": initial_state has ", state.view().size(),
                     " bytes, a state of this model has ", state_bytes()));
  }
  if (state.pending_token < 0 || state.pending_token >= vocab) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": initial_state's pending token ",
                                                   state.pending_token,
                                                   " is outside the vocabulary [0, ", vocab, ")"));
  }
  return absl::OkStatus();
}

absl::Status Engine::ValidateGeneration(const GenerationRequest& request) const {
  const int64_t vocab = model_.config().vocab_size;
  HGRN2_RETURN_IF_ERROR(request.sampling.Validate(vocab));
  HGRN2_RETURN_IF_ERROR(request.stopping.Validate(vocab));
  if (request.prompt.empty() && !request.initial_state && request.resume_parked.empty()) {
    return absl::InvalidArgumentError(
        "generate: empty prompt (give prompt ids, or a state to continue from)");
  }
  HGRN2_RETURN_IF_ERROR(ValidateTokens(request.prompt, "generate: prompt"));
  if (request.initial_state) {
    HGRN2_RETURN_IF_ERROR(ValidateInitialState(*request.initial_state, "generate"));
  }
  return absl::OkStatus();
}

std::unique_ptr<Sequence> Engine::NewGeneration(const GenerationRequest& request,
                                                SamplingParams sampling,
                                                std::function<void()> on_update) {
  const RequestId id = next_id_.fetch_add(1);
  // The sampler is built here, off the device thread (it may read the system's entropy).
  Sampler sampler(std::move(sampling), model_.config().vocab_size, request.prompt);
  std::unique_ptr<Sequence> sequence =
      NewSequence(id, request.priority, request.deadline, request.prompt);
  sequence->stream = std::make_shared<GenerationStream>(id, std::move(on_update));
  sequence->sampler.emplace(std::move(sampler));
  sequence->stopping = request.stopping;
  sequence->stops_after = request.stops_after;
  return sequence;
}

absl::StatusOr<std::shared_ptr<GenerationStream>> Engine::Generate(GenerationRequest request) {
  HGRN2_RETURN_IF_ERROR(ValidateGeneration(request));
  std::unique_ptr<Sequence> sequence =
      NewGeneration(request, std::move(request.sampling), std::move(request.on_update));
  sequence->initial_state = std::move(request.initial_state);
  sequence->resume_parked = std::move(request.resume_parked);
  sequence->park_as = std::move(request.park_as);
  sequence->return_final_state = request.return_final_state;
  std::shared_ptr<GenerationStream> stream = sequence->stream;
  HGRN2_RETURN_IF_ERROR(scheduler_->Submit(std::move(sequence)));
  return stream;
}

absl::StatusOr<std::vector<std::shared_ptr<GenerationStream>>> Engine::GenerateMany(
    GenerationRequest request, int32_t n) {
  const int32_t most = std::min(options_.max_samples, options_.max_running);
  if (n < 1 || n > most) {
    return absl::InvalidArgumentError(
        absl::StrCat("generate: n must be in [1, ", most, "] (max_samples ", options_.max_samples,
                     ", max_running ", options_.max_running, "), got ", n));
  }
  if (request.return_final_state || !request.park_as.empty() || !request.resume_parked.empty()) {
    return absl::InvalidArgumentError(
        "generate: n samples cannot return_final_state, park_as or resume_parked (each sample "
        "ends in a state of its own)");
  }
  if (request.stops_after) {
    return absl::InvalidArgumentError(
        "generate: n samples cannot share a stops_after condition (it follows one sequence)");
  }
  HGRN2_RETURN_IF_ERROR(ValidateGeneration(request));
  std::vector<std::shared_ptr<GenerationStream>> streams;
  std::unique_ptr<Sequence> first;
  for (int32_t i = 0; i < n; ++i) {
    SamplingParams sampling = request.sampling;
    if (sampling.seed) *sampling.seed += static_cast<uint64_t>(i);  // unseeded: each its own
    std::unique_ptr<Sequence> sample =
        NewGeneration(request, std::move(sampling), request.on_update);
    streams.push_back(sample->stream);
    if (i == 0) {
      first = std::move(sample);
    } else {
      sample->input.clear();  // forks feed only the prompt's last token, as first's last_token
      first->forks.push_back(std::move(sample));
    }
  }
  first->initial_state = std::move(request.initial_state);
  HGRN2_RETURN_IF_ERROR(scheduler_->Submit(std::move(first)));
  return streams;
}

absl::StatusOr<std::shared_ptr<PendingScore>> Engine::Score(ScoreRequest request) {
  if (request.initial_state) {
    if (request.tokens.empty()) {
      return absl::InvalidArgumentError(
          "score: needs at least 1 token after an initial_state, got none");
    }
    HGRN2_RETURN_IF_ERROR(ValidateInitialState(*request.initial_state, "score"));
  } else if (request.tokens.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "score: needs at least 2 tokens (the first is context), got ", request.tokens.size()));
  }
  HGRN2_RETURN_IF_ERROR(ValidateTokens(request.tokens, "score: text"));
  if (request.num_top_logprobs < 0 || request.num_top_logprobs > ScoreRequest::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("score: num_top_logprobs must be in [0, ",
                                                   ScoreRequest::kMaxTopLogprobs, "], got ",
                                                   request.num_top_logprobs));
  }
  const RequestId id = next_id_.fetch_add(1);
  auto pending = std::make_shared<PendingScore>(id, std::move(request.on_done));
  std::unique_ptr<Sequence> sequence =
      NewSequence(id, request.priority, request.deadline, std::move(request.tokens));
  sequence->score = pending;
  sequence->num_top_logprobs = request.num_top_logprobs;
  sequence->initial_state = std::move(request.initial_state);
  HGRN2_RETURN_IF_ERROR(scheduler_->Submit(std::move(sequence)));
  return pending;
}

}  // namespace hgrn2

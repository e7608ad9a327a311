// The HGRN2 forward pass, written once over the Backend op set: prefill of token runs and the
// batched decode step, on states held in a StatePool.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"

namespace hgrn2 {

// A run of tokens that advances the sequence in `slot` (from whatever state the slot holds).
struct SequenceTokens {
  SlotId slot = 0;
  absl::Span<const int32_t> tokens;
};

// Layer `layer`'s token mixer as the recurrence ops take it: sizes, conv taps and lower bound
// from the model, states from the pool.
Hgrn2LayerOp MakeLayerOp(const Model& model, const StatePool& pool, int64_t layer);

enum class LogitsFor {
  kLastToken,   // one row per sequence: the logits after its last token
  kEveryToken,  // one row per token, in batch order (scoring, tests)
};

// Thread-safety: the device thread only (it drives the backend and the pool).
class ForwardPass {
 public:
  struct Options {
    // Tokens per Prefill call, summed over the batch; sizes the activation workspace.
    int64_t max_tokens = 512;
    // Sequences per call (Prefill or Decode).
    int32_t max_sequences = 64;
    // Tokens per chunk of the chunked prefill; 0 = token by token; kBackendDefault = the
    // backend's preferred_prefill_chunk_size(). Both forms agree to rounding.
    static constexpr int32_t kBackendDefault = -1;
    int32_t prefill_chunk_size = kBackendDefault;
  };

  // Allocates the workspace on the model's backend. InvalidArgument for non-positive sizes.
  static absl::StatusOr<std::unique_ptr<ForwardPass>> Create(const Model& model, StatePool& pool,
                                                             const Options& options);

  ~ForwardPass();
  ForwardPass(const ForwardPass&) = delete;
  ForwardPass& operator=(const ForwardPass&) = delete;

  // Advances every sequence through its tokens and returns logits (device memory, valid until
  // the next call). InvalidArgument, with nothing changed, for: an empty batch or sequence, more
  // tokens or sequences than the options allow, a token id outside [0, V) (naming sequence and
  // position), a slot that is not allocated, the same slot twice.
  absl::StatusOr<DeviceTensor> Prefill(absl::Span<const SequenceTokens> batch, LogitsFor which);

  // One token per sequence through the decode-step kernel; row b holds the logits after
  // tokens[b]. Same validation as Prefill.
  absl::StatusOr<DeviceTensor> Decode(absl::Span<const SlotId> slots,
                                      absl::Span<const int32_t> tokens);

  // Host copies: all rows of `logits`, or log p(targets[r]) for each row r. With `max_logprobs`,
  // also each row's largest log-probability, equal to the target's exactly when the target holds
  // a largest logit.
  absl::StatusOr<std::vector<float>> LogitsToHost(const DeviceTensor& logits);
  absl::StatusOr<std::vector<float>> TargetLogprobs(const DeviceTensor& logits,
                                                    absl::Span<const int32_t> targets,
                                                    std::vector<float>* max_logprobs = nullptr);

  const Options& options() const { return options_; }
  const Model& model() const { return model_; }
  StatePool& pool() const { return pool_; }

 private:
  ForwardPass(const Model& model, StatePool& pool, const Options& options)
      : model_(model), pool_(pool), backend_(model.backend()), options_(options) {}
  absl::Status ValidateBatchSize(size_t num_seqs, int64_t num_tokens) const;
  // Checks one sequence of a batch and marks its slot in slot_in_batch_.
  absl::Status ValidateSequence(size_t index, SlotId slot, absl::Span<const int32_t> tokens);
  // The layers and the head over the tokens staged in ids_ (and slots_/offsets_).
  absl::StatusOr<DeviceTensor> Run(int64_t num_tokens, int32_t num_seqs, bool decode_step,
                                   LogitsFor which);

  const Model& model_;
  StatePool& pool_;
  Backend& backend_;
  Options options_;
  std::vector<DeviceBuffer> buffers_;
  // Each layer's recurrence op: sizes, conv taps, lower bound and where its states live. Fixed
  // for the life of the pass (the model and the pool do not move).
  std::vector<Hgrn2LayerOp> layer_ops_;
  // Activations [max_tokens, ...] in the compute dtype.
  DeviceTensor residual_, normed_, qfi_, mixed_, projected_, gate_up_, activated_, logits_;
  // Index arrays on the device, and their host staging copies.
  int32_t* ids_ = nullptr;
  int32_t* slots_ = nullptr;
  int32_t* offsets_ = nullptr;
  int32_t* last_rows_ = nullptr;
  int32_t* targets_ = nullptr;
  float* target_logprobs_ = nullptr;  // [2 * max_tokens]: the targets', then the rows' largest
  // Host mirror of [slots_ .. ids_ + max_tokens): staged here, uploaded with one copy per call.
  std::vector<int32_t> host_index_;
  std::vector<bool> slot_in_batch_;  // per pool slot, while a batch is validated
};

}  // namespace hgrn2

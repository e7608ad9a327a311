// ForwardPass: the layer loop of HGRN2 over the Backend ops, with validation of every batch.
#include "engine/model/forward_pass.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {

Hgrn2LayerOp MakeLayerOp(const Model& model, const StatePool& pool, int64_t layer) {
  const ModelConfig& c = model.config();
  const LayerWeights& w = model.layer(layer);
  Hgrn2LayerOp op;
  op.num_heads = static_cast<int32_t>(c.num_heads);
  op.key_dim = static_cast<int32_t>(c.key_dim);
  op.value_dim = static_cast<int32_t>(c.value_dim);
  op.conv_size = static_cast<int32_t>(c.conv_window());
  op.conv_weight = w.conv;
  op.lower_bound = w.lower_bound;
  op.states = pool.Layer(layer);
  return op;
}

absl::StatusOr<std::unique_ptr<ForwardPass>> ForwardPass::Create(const Model& model,
                                                                 StatePool& pool,
                                                                 const Options& options) {
  if (options.max_tokens <= 0 || options.max_sequences <= 0 ||
      options.prefill_chunk_size < Options::kBackendDefault) {
    return absl::InvalidArgumentError(
        "forward pass: max_tokens and max_sequences must be positive, prefill_chunk_size >= 0 "
        "(or kBackendDefault)");
  }
  Options resolved = options;
  if (resolved.prefill_chunk_size == Options::kBackendDefault) {
    resolved.prefill_chunk_size = model.backend().preferred_prefill_chunk_size();
  }
  std::unique_ptr<ForwardPass> pass(new ForwardPass(model, pool, resolved));
  const ModelConfig& c = model.config();
  const DType dtype = model.backend().compute_dtype();
  const int64_t rows = options.max_tokens;
  const int64_t d = c.hidden_size;
  auto make = [&](DeviceTensor& tensor, int64_t tensor_rows, int64_t cols) -> absl::Status {
    HGRN2_ASSIGN_OR_RETURN(
        DeviceBuffer buffer,
        model.backend().Allocate(static_cast<size_t>(tensor_rows * cols * DTypeSize(dtype))));
    tensor = buffer.Matrix(dtype, tensor_rows, cols);
    pass->buffers_.push_back(std::move(buffer));
    return absl::OkStatus();
  };
  HGRN2_RETURN_IF_ERROR(make(pass->residual_, rows, d));
  HGRN2_RETURN_IF_ERROR(make(pass->normed_, rows, d));
  HGRN2_RETURN_IF_ERROR(make(pass->qfi_, rows, 3 * d));
  HGRN2_RETURN_IF_ERROR(make(pass->mixed_, rows, d));
  HGRN2_RETURN_IF_ERROR(make(pass->projected_, rows, d));
  HGRN2_RETURN_IF_ERROR(make(pass->gate_up_, rows, 2 * c.intermediate_size));
  HGRN2_RETURN_IF_ERROR(make(pass->activated_, rows, c.intermediate_size));
  // Logits stay float32 on every backend: sampling and log-probabilities read them.
  HGRN2_ASSIGN_OR_RETURN(
      DeviceBuffer logits,
      model.backend().Allocate(static_cast<size_t>(rows * c.vocab_size) * sizeof(float)));
  pass->logits_ = logits.Matrix(DType::kF32, rows, c.vocab_size);
  pass->buffers_.push_back(std::move(logits));

  // Index arrays. Those a pass uploads share one allocation, [slots | offsets | last rows | ids],
  // mirrored on the host, so that a step uploads them with one copy.
  auto make_index = [&](int64_t count) -> absl::StatusOr<int32_t*> {
    HGRN2_ASSIGN_OR_RETURN(DeviceBuffer buffer, model.backend().Allocate(count * 4));
    auto* data = static_cast<int32_t*>(buffer.data());
    pass->buffers_.push_back(std::move(buffer));
    return data;
  };
  const int64_t seqs = options.max_sequences;
  HGRN2_ASSIGN_OR_RETURN(int32_t * staged, make_index(3 * seqs + 1 + rows));
  pass->host_index_.assign(static_cast<size_t>(3 * seqs + 1 + rows), 0);
  pass->slots_ = staged;
  pass->offsets_ = staged + seqs;
  pass->last_rows_ = staged + 2 * seqs + 1;
  pass->ids_ = staged + 3 * seqs + 1;
  HGRN2_ASSIGN_OR_RETURN(pass->targets_, make_index(rows));
  HGRN2_ASSIGN_OR_RETURN(int32_t * target_logprobs, make_index(2 * rows));
  pass->target_logprobs_ = reinterpret_cast<float*>(target_logprobs);

  for (int64_t l = 0; l < c.num_layers; ++l)
    pass->layer_ops_.push_back(MakeLayerOp(model, pool, l));
  return pass;
}

// The recordings point into this pass's workspace, which dies with it.
ForwardPass::~ForwardPass() { backend_.ForgetRecordings(this); }

absl::Status ForwardPass::ValidateBatchSize(size_t num_seqs, int64_t num_tokens) const {
  if (num_seqs == 0) return absl::InvalidArgumentError("forward pass: empty batch");
  if (static_cast<int64_t>(num_seqs) > options_.max_sequences) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward pass: ", num_seqs, " sequences, at most ", options_.max_sequences, " per call"));
  }
  if (num_tokens > options_.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward pass: ", num_tokens, " tokens, at most ", options_.max_tokens, " per call"));
  }
  return absl::OkStatus();
}

absl::Status ForwardPass::ValidateSequence(size_t index, SlotId slot,
                                           absl::Span<const int32_t> tokens) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("forward pass: sequence ", index, " is empty"));
  }
  if (!pool_.is_allocated(slot)) {
    return absl::InvalidArgumentError(absl::StrCat("forward pass: sequence ", index, " uses slot ",
                                                   slot, ", which is not allocated"));
  }
  if (slot_in_batch_[slot]) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward pass: slot ", slot, " appears twice in one batch"));
  }
  slot_in_batch_[slot] = true;
  const int64_t vocab = model_.config().vocab_size;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward pass: token id ", tokens[t], " at position ", t, " of sequence ",
                       index, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceTensor> ForwardPass::Prefill(absl::Span<const SequenceTokens> batch,
                                                  LogitsFor which) {
  int64_t num_tokens = 0;
  for (const SequenceTokens& seq : batch) num_tokens += static_cast<int64_t>(seq.tokens.size());
  HGRN2_RETURN_IF_ERROR(ValidateBatchSize(batch.size(), num_tokens));
  slot_in_batch_.assign(static_cast<size_t>(pool_.num_slots()), false);
  for (size_t b = 0; b < batch.size(); ++b) {
    HGRN2_RETURN_IF_ERROR(ValidateSequence(b, batch[b].slot, batch[b].tokens));
  }
  const int64_t seqs = options_.max_sequences;
  int32_t* slots = host_index_.data();
  int32_t* offsets = slots + seqs;
  int32_t* last_rows = offsets + seqs + 1;
  int32_t* ids = last_rows + seqs;
  offsets[0] = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceTokens& seq = batch[b];
    std::copy(seq.tokens.begin(), seq.tokens.end(), ids + offsets[b]);
    slots[b] = seq.slot;
    offsets[b + 1] = offsets[b] + static_cast<int32_t>(seq.tokens.size());
    last_rows[b] = offsets[b + 1] - 1;
  }
  return Run(num_tokens, static_cast<int32_t>(batch.size()),
             /*decode_step=*/false, which);
}

absl::StatusOr<DeviceTensor> ForwardPass::Decode(absl::Span<const SlotId> slots,
                                                 absl::Span<const int32_t> tokens) {
  if (slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: ", slots.size(), " slots but ", tokens.size(), " tokens"));
  }
  HGRN2_RETURN_IF_ERROR(ValidateBatchSize(slots.size(), static_cast<int64_t>(tokens.size())));
  slot_in_batch_.assign(static_cast<size_t>(pool_.num_slots()), false);
  for (size_t b = 0; b < slots.size(); ++b) {
    HGRN2_RETURN_IF_ERROR(ValidateSequence(b, slots[b], tokens.subspan(b, 1)));
  }
  const int64_t seqs = options_.max_sequences;
  std::copy(slots.begin(), slots.end(), host_index_.begin());
  std::copy(tokens.begin(), tokens.end(), host_index_.begin() + 3 * seqs + 1);
  return Run(static_cast<int64_t>(slots.size()), static_cast<int32_t>(slots.size()),
             /*decode_step=*/true, LogitsFor::kEveryToken);
}

absl::StatusOr<DeviceTensor> ForwardPass::Run(int64_t num_tokens, int32_t num_seqs,
                                              bool decode_step, LogitsFor which) {
  const ModelConfig& c = model_.config();
  const float eps = c.norm_eps;
  // Slots, offsets and last rows (all max_sequences wide) and this step's ids: one copy.
  HGRN2_RETURN_IF_ERROR(backend_.CopyToDevice(slots_, host_index_.data(),
                                              static_cast<size_t>(ids_ - slots_ + num_tokens) * 4));

  // Everything from the embedding to the logits reads only device memory, so a decode step can be
  // recorded once per batch size and replayed (Backend::RunRecorded).
  auto layers = [&]() -> absl::Status {
    DeviceTensor residual = residual_.Rows(0, num_tokens);
    DeviceTensor normed = normed_.Rows(0, num_tokens);
    DeviceTensor qfi = qfi_.Rows(0, num_tokens);
    DeviceTensor mixed = mixed_.Rows(0, num_tokens);
    DeviceTensor projected = projected_.Rows(0, num_tokens);
    DeviceTensor gate_up = gate_up_.Rows(0, num_tokens);
    DeviceTensor activated = activated_.Rows(0, num_tokens);

    HGRN2_RETURN_IF_ERROR(backend_.GatherRows(model_.embeddings(), ids_, residual));
    HGRN2_RETURN_IF_ERROR(backend_.RmsNorm(residual, model_.layer(0).attn_norm, eps, normed));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const LayerWeights& w = model_.layer(l);
      const Hgrn2LayerOp& op = layer_ops_[static_cast<size_t>(l)];
      HGRN2_RETURN_IF_ERROR(backend_.Gemm(normed, w.qfi_proj, qfi));
      if (decode_step) {
        HGRN2_RETURN_IF_ERROR(backend_.Hgrn2Step(op, slots_, qfi, mixed));
      } else {
        HGRN2_RETURN_IF_ERROR(backend_.Hgrn2Prefill(op, num_seqs, slots_, offsets_,
                                                    options_.prefill_chunk_size, qfi, mixed));
      }
      // g_norm over the whole of D (not per head), with fla's epsilon, then the output projection.
      HGRN2_RETURN_IF_ERROR(backend_.RmsNorm(mixed, w.g_norm, c.gate_norm_eps(), normed));
      HGRN2_RETURN_IF_ERROR(backend_.Gemm(normed, w.o_proj, projected));
      HGRN2_RETURN_IF_ERROR(backend_.AddRmsNorm(residual, projected, w.mlp_norm, eps, normed));
      HGRN2_RETURN_IF_ERROR(backend_.Gemm(normed, w.gate_up_proj, gate_up));
      HGRN2_RETURN_IF_ERROR(backend_.SwiGlu(gate_up, activated));
      HGRN2_RETURN_IF_ERROR(backend_.Gemm(activated, w.down_proj, projected));
      const DeviceTensor& next_norm =
          l + 1 < c.num_layers ? model_.layer(l + 1).attn_norm : model_.final_norm();
      HGRN2_RETURN_IF_ERROR(backend_.AddRmsNorm(residual, projected, next_norm, eps, normed));
    }
    // A decode step wants every row's logits: the head belongs to the recording too.
    if (decode_step) return backend_.Gemm(normed, model_.lm_head(), logits_.Rows(0, num_tokens));
    return absl::OkStatus();
  };
  if (decode_step) {
    HGRN2_RETURN_IF_ERROR(backend_.RunRecorded(this, static_cast<uint64_t>(num_seqs), layers));
    return logits_.Rows(0, num_tokens);
  }
  HGRN2_RETURN_IF_ERROR(layers());
  DeviceTensor normed = normed_.Rows(0, num_tokens);
  DeviceTensor head_input = normed;
  if (which == LogitsFor::kLastToken) {
    head_input = mixed_.Rows(0, num_seqs);
    HGRN2_RETURN_IF_ERROR(backend_.GatherRows(normed, last_rows_, head_input));
  }
  DeviceTensor logits = logits_.Rows(0, head_input.rows);
  HGRN2_RETURN_IF_ERROR(backend_.Gemm(head_input, model_.lm_head(), logits));
  return logits;
}

absl::StatusOr<std::vector<float>> ForwardPass::LogitsToHost(const DeviceTensor& logits) {
  if (logits.dtype != DType::kF32) {
    return absl::UnimplementedError("logits to host: only F32 logits are copied as they are");
  }
  std::vector<float> out(static_cast<size_t>(logits.rows * logits.cols));
  if (logits.row_stride == logits.cols) {  // the pass's own logits: one copy
    HGRN2_RETURN_IF_ERROR(backend_.CopyToHost(out.data(), logits.data, out.size() * sizeof(float)));
    return out;
  }
  for (int64_t r = 0; r < logits.rows; ++r) {
    const auto* row = static_cast<const std::byte*>(logits.data) + r * logits.row_stride * 4;
    HGRN2_RETURN_IF_ERROR(
        backend_.CopyToHost(out.data() + r * logits.cols, row, logits.cols * sizeof(float)));
  }
  return out;
}

absl::StatusOr<std::vector<float>> ForwardPass::TargetLogprobs(const DeviceTensor& logits,
                                                               absl::Span<const int32_t> targets,
                                                               std::vector<float>* max_logprobs) {
  if (static_cast<int64_t>(targets.size()) != logits.rows || logits.rows > options_.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("target logprobs: ", targets.size(), " targets for ", logits.rows, " rows"));
  }
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] < 0 || targets[r] >= logits.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("target logprobs: token id ", targets[r], " outside the vocabulary"));
    }
  }
  HGRN2_RETURN_IF_ERROR(backend_.CopyToDevice(targets_, targets.data(), targets.size() * 4));
  const size_t rows = targets.size();
  float* row_max = max_logprobs != nullptr ? target_logprobs_ + rows : nullptr;
  HGRN2_RETURN_IF_ERROR(backend_.LogSoftmaxGather(logits, targets_, target_logprobs_, row_max));
  std::vector<float> both((row_max != nullptr ? 2 : 1) * rows);
  HGRN2_RETURN_IF_ERROR(backend_.CopyToHost(both.data(), target_logprobs_, both.size() * 4));
  if (max_logprobs != nullptr) max_logprobs->assign(both.begin() + rows, both.end());
  both.resize(rows);
  return both;
}

}  // namespace hgrn2

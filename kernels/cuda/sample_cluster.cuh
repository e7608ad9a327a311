// The one-pass CUDA sampler of sample_cluster.cu, as LaunchSample (sample.cu) calls it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sample.h"

namespace hgrn2::kernels::cuda {

// Whether the cluster sampler takes rows of `vocab` logits on the current device: a card with
// thread-block clusters (compute capability 9.0 or later) and a vocabulary whose slices fit in
// its blocks' shared memory (up to 131,072 tokens).
cudaError_t SampleClusterFits(int64_t vocab, bool* fits);

// One cluster of blocks a row (params checked by LaunchSample, and SampleClusterFits true).
cudaError_t LaunchSampleCluster(const SampleParams& params, cudaStream_t stream);

}  // namespace hgrn2::kernels::cuda

// GPU test of the small-batch GEMV (kernels/cuda/gemv.cu) against the CPU reference GEMM, every
// variant, at awkward sizes with padded strides: the columns past n and the rows past m must stay
// untouched. Skipped where there is no GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/dtype.h"
#include "engine/model/fp8_weights.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "kernels/gemv.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::RandomNormal;
using ::hgrn2::testing::RelativeL2Error;

#define CUDA_OK(expr)                                                                            \
  do {                                                                                           \
    const cudaError_t cuda_ok_error = (expr);                                                    \
    ASSERT_EQ(cuda_ok_error, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_ok_error); \
  } while (0)

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

DType ToDType(kernels::GemvType t) {
  switch (t) {
    case kernels::GemvType::kBF16:
      return DType::kBF16;
    case kernels::GemvType::kF16:
      return DType::kF16;
    case kernels::GemvType::kF32:
      return DType::kF32;
  }
  return DType::kF32;
}

// Device bytes of `values` in `dtype`; `values` are replaced by what the device holds.
void* Upload(std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  EXPECT_TRUE(ConvertFromFloat(values.data(), values.size(), dtype, bytes.data()).ok());
  EXPECT_TRUE(ConvertToFloat(dtype, bytes.data(), values.size(), values.data()).ok());
  void* device = nullptr;
  EXPECT_EQ(cudaMalloc(&device, bytes.size()), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(device, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  return device;
}

// Launches `p` with `variant` into its output (c_rows rows of the padded stride, NaN before the
// launch) and checks that exactly the [m, n] block was written, finite, and nothing past it; the
// block goes to `got_block`.
void LaunchAndReadBlock(const kernels::GemvParams& p, int variant, DType out, int64_t c_rows,
                        std::vector<float>* got_block) {
  ASSERT_TRUE(kernels::CheckGemvParams(p).ok()) << kernels::Describe(kernels::CheckGemvParams(p));
  CUDA_OK(kernels::LaunchGemv(p, variant, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const int64_t c_stride = p.c_stride_row;
  const size_t c_bytes = static_cast<size_t>(c_rows * c_stride) * DTypeSize(out);
  std::vector<std::byte> bytes(c_bytes);
  CUDA_OK(cudaMemcpy(bytes.data(), p.c, c_bytes, cudaMemcpyDeviceToHost));
  std::vector<float> got(static_cast<size_t>(c_rows * c_stride));
  ASSERT_TRUE(ConvertToFloat(out, bytes.data(), got.size(), got.data()).ok());
  for (int64_t i = 0; i < c_rows; ++i) {
    for (int64_t j = 0; j < c_stride; ++j) {
      const float v = got[i * c_stride + j];
      if (i < p.m && j < p.n) {
        ASSERT_TRUE(std::isfinite(v)) << "out[" << i << "][" << j << "] not written";
        got_block->push_back(v);
      } else {
        ASSERT_TRUE(std::isnan(v)) << "out[" << i << "][" << j << "] written";
      }
    }
  }
}

TEST(CudaGemvTest, EveryVariantMatchesTheReference) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  struct Types {
    kernels::GemvType in, out;
  };
  const Types types[] = {{kernels::GemvType::kBF16, kernels::GemvType::kBF16},
                         {kernels::GemvType::kBF16, kernels::GemvType::kF32},
                         {kernels::GemvType::kF16, kernels::GemvType::kF16},
                         {kernels::GemvType::kF16, kernels::GemvType::kF32}};
  struct Size {
    int64_t m, n, k;
  };
  // k of 8 (one chunk), of an odd number of chunks per thread, and of the model's 2048 and 5632.
  const Size sizes[] = {{1, 1, 8},     {1, 33, 2048}, {3, 7, 4104},   {2, 130, 5632},
                        {8, 65, 2056}, {5, 9, 16},    {13, 31, 2048}, {16, 130, 5632}};
  for (const Types& t : types) {
    for (const Size& z : sizes) {
      for (int variant = 0; variant < kernels::kGemvVariants; ++variant) {
        SCOPED_TRACE(absl::StrCat("m ", z.m, " n ", z.n, " k ", z.k, " variant ", variant, " in ",
                                  static_cast<int>(t.in), " out ", static_cast<int>(t.out)));
        const int64_t x_stride = z.k + 8, w_stride = z.k + 16, c_stride = z.n + 3;
        const int64_t c_rows = z.m + 1;  // one row past m
        std::vector<float> x = RandomNormal(z.m * x_stride, 21 + z.k);
        std::vector<float> w = RandomNormal(z.n * w_stride, 22 + z.n, 0.05f);
        const DType in = ToDType(t.in), out = ToDType(t.out);
        void* dx = Upload(x, in);
        void* dw = Upload(w, in);
        void* dc = nullptr;
        const size_t c_bytes = static_cast<size_t>(c_rows * c_stride) * DTypeSize(out);
        CUDA_OK(cudaMalloc(&dc, c_bytes));
        CUDA_OK(cudaMemset(dc, 0xFF, c_bytes));  // NaN in every dtype
        kernels::GemvParams p;
        p.m = z.m;
        p.n = z.n;
        p.k = z.k;
        p.in = t.in;
        p.out = t.out;
        p.x = dx;
        p.x_stride_row = x_stride;
        p.w = dw;
        p.w_stride_row = w_stride;
        p.c = dc;
        p.c_stride_row = c_stride;
        std::vector<float> got_block;
        ASSERT_NO_FATAL_FAILURE(LaunchAndReadBlock(p, variant, out, c_rows, &got_block));
        std::vector<float> want(static_cast<size_t>(z.m * z.n));
        kernels::GemmReference({.m = z.m,
                                .n = z.n,
                                .k = z.k,
                                .a = x.data(),
                                .a_stride_row = x_stride,
                                .b = w.data(),
                                .b_stride_row = w_stride,
                                .c = want.data(),
                                .c_stride_row = z.n});
        // Float accumulation in another order; a 16-bit output rounds once more.
        EXPECT_LT(RelativeL2Error(got_block, want), out == DType::kF32 ? 1e-5 : 1e-2);
        cudaFree(dx);
        cudaFree(dw);
        cudaFree(dc);
      }
    }
  }
}

// FP8 weights (E4M3 codes, a scale per row) against the reference on the values they stand for,
// every variant, at awkward sizes with padded strides; the outputs past m and n stay untouched.
TEST(CudaGemvTest, Fp8WeightsMatchTheReferenceOnTheirValues) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  struct Size {
    int64_t m, n, k;
  };
  // k of one 16-code chunk, of chunks that leave lanes idle, and the model's 2048 and 5632; n not
  // a multiple of the rows a block takes.
  const Size sizes[] = {{1, 1, 16},    {1, 33, 2048}, {3, 7, 4112},   {2, 130, 5632},
                        {8, 65, 2064}, {5, 9, 48},    {13, 31, 2048}, {16, 131, 5632}};
  for (const kernels::GemvType out_type : {kernels::GemvType::kBF16, kernels::GemvType::kF32}) {
    for (const Size& z : sizes) {
      for (int variant = 0; variant < kernels::kGemvVariants; ++variant) {
        SCOPED_TRACE(absl::StrCat("m ", z.m, " n ", z.n, " k ", z.k, " variant ", variant, " out ",
                                  static_cast<int>(out_type)));
        const int64_t x_stride = z.k + 8, w_stride = z.k + 16, c_stride = z.n + 3;
        const int64_t c_rows = z.m + 1;
        std::vector<float> x = RandomNormal(z.m * x_stride, 31 + z.k);
        const std::vector<float> w = RandomNormal(z.n * w_stride, 32 + z.n, 0.05f);
        // Codes for the padded rows too (the columns past k are never read).
        const absl::StatusOr<Fp8Rows> fp8 = QuantizeFp8Rows(w, z.n, w_stride);
        ASSERT_TRUE(fp8.ok()) << fp8.status();
        const std::vector<uint8_t>& codes = fp8->codes;
        const std::vector<float>& scales = fp8->scales;
        const std::vector<float> padded_values = DequantizeFp8Rows(*fp8);
        std::vector<float> values(static_cast<size_t>(z.n * z.k));  // what the codes stand for
        for (int64_t r = 0; r < z.n; ++r) {
          std::copy_n(padded_values.begin() + r * w_stride, z.k, values.begin() + r * z.k);
        }
        const DType out = ToDType(out_type);
        void* dx = Upload(x, DType::kBF16);
        void* dw = nullptr;
        void* ds = nullptr;
        void* dc = nullptr;
        CUDA_OK(cudaMalloc(&dw, codes.size()));
        CUDA_OK(cudaMemcpy(dw, codes.data(), codes.size(), cudaMemcpyHostToDevice));
        CUDA_OK(cudaMalloc(&ds, scales.size() * sizeof(float)));
        CUDA_OK(
            cudaMemcpy(ds, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice));
        const size_t c_bytes = static_cast<size_t>(c_rows * c_stride) * DTypeSize(out);
        CUDA_OK(cudaMalloc(&dc, c_bytes));
        CUDA_OK(cudaMemset(dc, 0xFF, c_bytes));
        kernels::GemvParams p;
        p.m = z.m;
        p.n = z.n;
        p.k = z.k;
        p.in = kernels::GemvType::kBF16;
        p.out = out_type;
        p.x = dx;
        p.x_stride_row = x_stride;
        p.w = dw;
        p.w_stride_row = w_stride;
        p.w_scales = static_cast<const float*>(ds);
        p.c = dc;
        p.c_stride_row = c_stride;
        std::vector<float> got_block;
        ASSERT_NO_FATAL_FAILURE(LaunchAndReadBlock(p, variant, out, c_rows, &got_block));
        std::vector<float> want(static_cast<size_t>(z.m * z.n));
        kernels::GemmReference({.m = z.m,
                                .n = z.n,
                                .k = z.k,
                                .a = x.data(),
                                .a_stride_row = x_stride,
                                .b = values.data(),
                                .b_stride_row = z.k,
                                .c = want.data(),
                                .c_stride_row = z.n});
        EXPECT_LT(RelativeL2Error(got_block, want), out == DType::kF32 ? 1e-5 : 1e-2);
        cudaFree(dx);
        cudaFree(dw);
        cudaFree(ds);
        cudaFree(dc);
      }
    }
  }
}

// Microseconds per call of the bf16 and FP8 GEMV at the 1.3B shape's products (printed, not
// asserted: timings live in bench/RESULTS.md).
TEST(CudaGemvTest, Fp8AgainstBf16Timing) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  struct Shape {
    int64_t n, k;
  };
  for (const Shape& s :
       {Shape{6144, 2048}, Shape{2048, 2048}, Shape{11264, 2048}, Shape{2048, 5632}}) {
    for (const int64_t m : {1, 16}) {
      void* dx = nullptr;
      void* dw = nullptr;
      void* ds = nullptr;
      void* dc = nullptr;
      CUDA_OK(cudaMalloc(&dx, static_cast<size_t>(m * s.k) * 2));
      CUDA_OK(cudaMemset(dx, 0, static_cast<size_t>(m * s.k) * 2));
      CUDA_OK(cudaMalloc(&dw, static_cast<size_t>(s.n * s.k) * 2));
      CUDA_OK(cudaMemset(dw, 0x30, static_cast<size_t>(s.n * s.k) * 2));
      CUDA_OK(cudaMalloc(&ds, static_cast<size_t>(s.n) * 4));
      CUDA_OK(cudaMemset(ds, 0, static_cast<size_t>(s.n) * 4));
      CUDA_OK(cudaMalloc(&dc, static_cast<size_t>(m * s.n) * 2));
      std::string line = absl::StrCat("gemv m ", m, " n ", s.n, " k ", s.k, ":");
      for (const bool fp8 : {false, true}) {
        for (int variant = 0; variant < kernels::kGemvVariants; ++variant) {
          kernels::GemvParams p;
          p.m = m;
          p.n = s.n;
          p.k = s.k;
          p.x = dx;
          p.x_stride_row = s.k;
          p.w = dw;
          p.w_stride_row = s.k;
          p.w_scales = fp8 ? static_cast<const float*>(ds) : nullptr;
          p.c = dc;
          p.c_stride_row = s.n;
          cudaEvent_t start, stop;
          CUDA_OK(cudaEventCreate(&start));
          CUDA_OK(cudaEventCreate(&stop));
          for (int i = 0; i < 20; ++i) CUDA_OK(kernels::LaunchGemv(p, variant, nullptr));
          constexpr int kReps = 200;
          CUDA_OK(cudaEventRecord(start));
          for (int i = 0; i < kReps; ++i) CUDA_OK(kernels::LaunchGemv(p, variant, nullptr));
          CUDA_OK(cudaEventRecord(stop));
          CUDA_OK(cudaEventSynchronize(stop));
          float ms = 0;
          CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
          const double us = 1000.0 * ms / kReps;
          const double bytes = static_cast<double>(s.n * s.k) * (fp8 ? 1 : 2);
          absl::StrAppend(&line, " ", fp8 ? "fp8" : "bf16", " v", variant, " ",
                          absl::StrFormat("%.1f us (%.0f GB/s)", us, bytes / us / 1e3));
          cudaEventDestroy(start);
          cudaEventDestroy(stop);
        }
      }
      std::printf("%s\n", line.c_str());
      cudaFree(dx);
      cudaFree(dw);
      cudaFree(ds);
      cudaFree(dc);
    }
  }
}

TEST(CudaGemvTest, RefusesWhatItCannotLoad) {
  kernels::GemvParams p;
  p.m = 1;
  p.n = 4;
  p.k = 12;
  p.x_stride_row = 16;
  p.w_stride_row = 16;
  p.c_stride_row = 4;
  EXPECT_EQ(kernels::Describe(kernels::CheckGemvParams(p)),
            "gemv: k must be a multiple of 8 for the CUDA kernels, got 12");
  p.k = 16;
  p.m = 17;
  EXPECT_EQ(kernels::Describe(kernels::CheckGemvParams(p)),
            "gemv: m must be at most 16 for the CUDA kernels, got 17");
  p.m = 1;
  p.x = reinterpret_cast<const void*>(uintptr_t{24});
  EXPECT_EQ(kernels::Describe(kernels::CheckGemvParams(p)),
            "gemv: x address must be a multiple of 16 for the CUDA kernels, got 8");
  if (HaveGpu()) {
    EXPECT_EQ(kernels::LaunchGemv(p, 0, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  }
}

}  // namespace
}  // namespace hgrn2

// The CUDA engine tests skip themselves where there is no CUDA device.
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2::engine_testing {
namespace {

#ifdef HGRN2_ENGINE_ON_CUDA
// Skips every test where there is no CUDA device.
class CudaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend({});
    if (!cuda.ok()) GTEST_SKIP() << cuda.status();
  }
};
const ::testing::Environment* const kCudaEnvironment =
    ::testing::AddGlobalTestEnvironment(new CudaEnvironment);
#endif

}  // namespace
}  // namespace hgrn2::engine_testing

// StatePool: allocation, exhaustion, misuse errors, zeroing, copies and host transfers.
#include "engine/model/state_pool.h"

#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::testing::HasSubstr;

ModelConfig SmallConfig() {
  ModelConfig config;
  config.vocab_size = 10;
  config.hidden_size = 6;
  config.num_layers = 2;
  config.num_heads = 2;
  config.key_dim = 3;
  config.value_dim = 3;
  config.use_short_conv = true;
  config.conv_size = 2;
  return config;
}

std::vector<std::byte> Pattern(size_t bytes, uint8_t seed) {
  std::vector<std::byte> out(bytes);
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<std::byte>((i * 7 + seed) & 0xff);
  return out;
}

TEST(StatePool, SlotSizeFollowsTheConfig) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 3);
  // Per layer: H·dv·dk = 18 state floats + 3·D·K = 36 conv floats.
  EXPECT_EQ(pool->slot_bytes(), 2u * (18 + 36) * 4);
  const LayerStateView layer0 = pool->Layer(0), layer1 = pool->Layer(1);
  EXPECT_EQ(layer1.state - layer0.state, 18);
  EXPECT_EQ(layer0.conv_state - layer0.state, 2 * 18);
  EXPECT_EQ(layer1.conv_state - layer0.conv_state, 36);
  EXPECT_EQ(layer0.state_stride_slot, 2 * (18 + 36));
}

TEST(StatePool, Bf16StatesHalveTheStateAndKeepFloatConvWindowsAligned) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 3, DType::kBF16);
  EXPECT_EQ(pool->state_dtype(), DType::kBF16);
  // 2 layers · 18 bf16 states = 72 bytes, then 2 · 36 float windows = 288: 360, padded to 368.
  EXPECT_EQ(pool->slot_bytes(), 368u);
  const LayerStateView layer0 = pool->Layer(0), layer1 = pool->Layer(1);
  EXPECT_EQ(layer0.state, nullptr);
  EXPECT_EQ(layer1.state_bf16 - layer0.state_bf16, 18);
  EXPECT_EQ(layer0.state_stride_slot, 368 / 2);
  EXPECT_EQ(reinterpret_cast<std::byte*>(layer0.conv_state) -
                reinterpret_cast<std::byte*>(layer0.state_bf16),
            72);
  EXPECT_EQ(layer0.conv_state_stride_slot, 368 / 4);
  // The CPU backend computes on float32 states only, and says so.
  Hgrn2LayerOp op;
  op.num_heads = 2;
  op.key_dim = 3;
  op.value_dim = 3;
  op.states = layer0;
  std::vector<float> qfi(18), out(6);
  const int32_t slot = 0;
  ExpectError(backend->Hgrn2Step(op, &slot, DeviceTensor::Matrix(qfi.data(), DType::kF32, 1, 18),
                                 DeviceTensor::Matrix(out.data(), DType::kF32, 1, 6)),
              absl::StatusCode::kInvalidArgument, {"float32 states only"});
  ExpectError(StatePool::Create(*backend, SmallConfig(), 3, DType::kF16).status(),
              absl::StatusCode::kInvalidArgument, {"state dtype must be F32 or BF16", "F16"});
}

TEST(StatePool, AllocatesUntilExhaustedAndReusesFreedSlotsZeroed) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 3);
  std::vector<SlotId> slots;
  for (int i = 0; i < 3; ++i) slots.push_back(*pool->Allocate());
  EXPECT_EQ(slots, (std::vector<SlotId>{0, 1, 2}));
  EXPECT_EQ(pool->num_free(), 0);
  absl::StatusOr<SlotId> none = pool->Allocate();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("all 3 slots"));

  ASSERT_TRUE(pool->WriteHost(1, Pattern(pool->slot_bytes(), 3)).ok());
  ASSERT_TRUE(pool->Free(1).ok());
  EXPECT_EQ(*pool->Allocate(), 1);
  std::vector<std::byte> read(pool->slot_bytes());
  ASSERT_TRUE(pool->ReadHost(1, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, std::vector<std::byte>(pool->slot_bytes()));  // zeroed for the new sequence
}

TEST(StatePool, MisuseIsAnErrorNamingTheSlot) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 2);
  EXPECT_THAT(std::string(pool->Free(0).message()), HasSubstr("slot 0 is not allocated"));
  EXPECT_THAT(std::string(pool->Free(7).message()), HasSubstr("slot 7 outside [0, 2)"));
  const SlotId slot = *pool->Allocate();
  ASSERT_TRUE(pool->Free(slot).ok());
  const std::string freed = absl::StrCat("slot ", slot, " is not allocated");
  ExpectError(pool->Free(slot), absl::StatusCode::kInvalidArgument,  // double free
              {"state pool free", freed});
  ExpectError(pool->Reset(slot), absl::StatusCode::kInvalidArgument, {"state pool reset", freed});
  ExpectError(pool->Copy(slot, 1), absl::StatusCode::kInvalidArgument,
              {"state pool copy source", freed});
  const SlotId live = *pool->Allocate();  // slot 1 stays free
  ASSERT_NE(live, 1);
  ExpectError(pool->Copy(live, 1), absl::StatusCode::kInvalidArgument,
              {"state pool copy destination", "slot 1 is not allocated"});
  std::vector<std::byte> small(8);
  const std::string slot_has = absl::StrCat("a slot has ", pool->slot_bytes());
  ExpectError(pool->ReadHost(live, absl::MakeSpan(small)), absl::StatusCode::kInvalidArgument,
              {"state pool read", "buffer of 8 bytes", slot_has});
  ExpectError(pool->WriteHost(live, small), absl::StatusCode::kInvalidArgument,
              {"state pool write", "8 bytes given", slot_has});
  ExpectError(StatePool::Create(*backend, SmallConfig(), 0).status(),
              absl::StatusCode::kInvalidArgument, {"num_slots must be positive, got 0"});
  ExpectError(StatePool::Create(*backend, SmallConfig(), -3).status(),
              absl::StatusCode::kInvalidArgument, {"num_slots must be positive, got -3"});
}

TEST(StatePool, CopyResetAndHostRoundTripTouchOnlyTheirSlots) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 3);
  const SlotId a = *pool->Allocate(), b = *pool->Allocate(), c = *pool->Allocate();
  const std::vector<std::byte> pa = Pattern(pool->slot_bytes(), 1);
  const std::vector<std::byte> pc = Pattern(pool->slot_bytes(), 9);
  ASSERT_TRUE(pool->WriteHost(a, pa).ok());
  ASSERT_TRUE(pool->WriteHost(c, pc).ok());
  ASSERT_TRUE(pool->Copy(a, b).ok());
  std::vector<std::byte> read(pool->slot_bytes());
  ASSERT_TRUE(pool->ReadHost(b, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, pa);
  ASSERT_TRUE(pool->Reset(a).ok());
  ASSERT_TRUE(pool->ReadHost(a, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, std::vector<std::byte>(pool->slot_bytes()));
  ASSERT_TRUE(pool->ReadHost(b, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, pa);
  ASSERT_TRUE(pool->ReadHost(c, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, pc);
}

TEST(StatePool, SwapOutAndInRestoresTheStateExactlyAndFreesBothSides) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 2);
  auto area = *SwapArea::Create(*backend, pool->slot_bytes(), 2);
  const SlotId a = *pool->Allocate(), b = *pool->Allocate();
  const std::vector<std::byte> pa = Pattern(pool->slot_bytes(), 5);
  const std::vector<std::byte> pb = Pattern(pool->slot_bytes(), 11);
  ASSERT_TRUE(pool->WriteHost(a, pa).ok());
  ASSERT_TRUE(pool->WriteHost(b, pb).ok());

  const SwapSlotId swapped = *pool->SwapOut(a, *area);
  EXPECT_FALSE(pool->is_allocated(a));
  EXPECT_EQ(pool->num_free(), 1);
  EXPECT_EQ(area->num_free(), 1);
  // The freed device slot is reused and overwritten while the state waits on the host.
  const SlotId other = *pool->Allocate();
  ASSERT_EQ(other, a);
  ExpectError(pool->SwapIn(swapped, *area).status(), absl::StatusCode::kResourceExhausted,
              {"all 2 slots are in use"});
  EXPECT_EQ(area->num_free(), 1);  // a failed swap-in keeps the swapped state
  ASSERT_TRUE(pool->Free(other).ok());

  const SlotId back = *pool->SwapIn(swapped, *area);
  EXPECT_EQ(area->num_free(), 2);
  std::vector<std::byte> read(pool->slot_bytes());
  ASSERT_TRUE(pool->ReadHost(back, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, pa);
  ASSERT_TRUE(pool->ReadHost(b, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, pb);
}

TEST(StatePool, SwapErrorsNameTheProblemAndChangeNothing) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto pool = *StatePool::Create(*backend, SmallConfig(), 2);
  auto full = *SwapArea::Create(*backend, pool->slot_bytes(), 0);
  const SlotId a = *pool->Allocate();
  ExpectError(pool->SwapOut(a, *full).status(), absl::StatusCode::kResourceExhausted,
              {"swap area: all 0 slots are in use"});
  EXPECT_TRUE(pool->is_allocated(a));
  auto other_size = *SwapArea::Create(*backend, pool->slot_bytes() + 4, 1);
  ExpectError(pool->SwapOut(a, *other_size).status(), absl::StatusCode::kInvalidArgument,
              {"swap out", absl::StrCat(pool->slot_bytes() + 4, "-byte slots")});
  EXPECT_EQ(other_size->num_free(), 1);
  ExpectError(pool->SwapOut(1, *full).status(), absl::StatusCode::kInvalidArgument,
              {"swap out: slot 1 is not allocated"});
  auto area = *SwapArea::Create(*backend, pool->slot_bytes(), 1);
  ExpectError(pool->SwapIn(0, *area).status(), absl::StatusCode::kInvalidArgument,
              {"swap slot 0 is not allocated"});
  ExpectError(area->Free(3), absl::StatusCode::kInvalidArgument, {"swap slot 3 outside [0, 1)"});
  ExpectError(SwapArea::Create(*backend, 0, 1).status(), absl::StatusCode::kInvalidArgument,
              {"slot_bytes (0) must be positive"});
  ExpectError(SwapArea::Create(*backend, 8, -1).status(), absl::StatusCode::kInvalidArgument,
              {"num_slots (-1) not negative"});
}

}  // namespace
}  // namespace hgrn2

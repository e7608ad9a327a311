// hgrn2-session-bench: the cost of moving a session — a state slot to a serialized snapshot and
// back (device<->host copy, checksums, header) — and the memory and dir stores' Put/Get rates.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/base/recycler.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/fingerprint.h"
#include "engine/checkpoint/model_config.h"
#include "engine/checkpoint/model_presets.h"
#include "engine/model/state_pool.h"
#include "engine/scheduler/host_state_pool.h"
#include "engine/scheduler/request.h"
#include "engine/session/session_store.h"
#include "engine/session/snapshot.h"

namespace hgrn2 {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string preset = "1.3b";
  std::string device = "auto";
  std::string state_dtype = "f32";
  int reps = 20;
  int sessions = 16;  // per store measurement
  std::string dir;    // dir store folder (default: a fresh one under the temp dir)
};

// Runs `body` `reps` times after one warm-up; returns the best rate in GB/s for `bytes` each.
absl::StatusOr<double> BestRate(int reps, size_t bytes, const std::function<absl::Status()>& body) {
  HGRN2_RETURN_IF_ERROR(body());
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const Clock::time_point start = Clock::now();
    HGRN2_RETURN_IF_ERROR(body());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return static_cast<double>(bytes) / best / 1e9;
}

void Report(const char* what, double gb_per_s, size_t bytes) {
  std::printf("%-52s %8.2f GB/s  %8.3f ms\n", what, gb_per_s,
              static_cast<double>(bytes) / gb_per_s / 1e6);
}

absl::Status Run(const Flags& flags) {
  HGRN2_ASSIGN_OR_RETURN(const ModelConfig config, ModelPreset(flags.preset));
  if (flags.state_dtype != "f32" && flags.state_dtype != "bf16") {
    return absl::InvalidArgumentError("--state-dtype must be f32 or bf16");
  }
  const DType state_dtype = flags.state_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(flags.device));
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<StatePool> pool,
                         StatePool::Create(*backend, config, 2, state_dtype));
  const size_t bytes = pool->slot_bytes();
  const session::SnapshotExpectation expected{session::FingerprintRandomModel(config, kPresetSeed),
                                              session::StateLayout::For(config, state_dtype)};
  std::printf("device %s, preset %s, %s states: %.1f MiB per session\n",
              std::string(backend->name()).c_str(), flags.preset.c_str(), flags.state_dtype.c_str(),
              static_cast<double>(bytes) / (1 << 20));

  HGRN2_ASSIGN_OR_RETURN(const SlotId slot, pool->Allocate());
  std::vector<std::byte> state(bytes);
  for (size_t i = 0; i < bytes; ++i) state[i] = static_cast<std::byte>((i * 2654435761u) >> 13);
  HGRN2_RETURN_IF_ERROR(pool->WriteHost(slot, state));
  HGRN2_ASSIGN_OR_RETURN(HostBuffer pinned, backend->AllocateHost(bytes));
  const absl::Span<std::byte> pinned_bytes(static_cast<std::byte*>(pinned.data()), bytes);

  auto serialize = [&](absl::Span<const std::byte> from) {
    return session::Serialize(expected.model_fingerprint, expected.layout, 1000, absl::Now(), 42,
                              from);
  };
  std::string blob;
  // Export: what saving a session costs, from the slot to the snapshot's bytes.
  HGRN2_ASSIGN_OR_RETURN(double rate, BestRate(flags.reps, bytes, [&] {
                           HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, absl::MakeSpan(state)));
                           blob = serialize(state);
                           return absl::OkStatus();
                         }));
  Report("export: ReadHost (pageable) + Serialize", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&] {
                           HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, pinned_bytes));
                           blob = serialize(pinned_bytes);
                           return absl::OkStatus();
                         }));
  Report("export: ReadHost (pinned) + Serialize", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(
      rate, BestRate(flags.reps, bytes, [&] { return pool->ReadHost(slot, pinned_bytes); }));
  Report("  of which ReadHost (pinned)", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&] {
                           blob = serialize(pinned_bytes);
                           return absl::OkStatus();
                         }));
  Report("  of which Serialize (copy + XXH3 checksums)", rate, bytes);

  // The paths hgrn2-server takes (engine/scheduler/scheduler.cc ReadState and WriteState;
  // engine/session/session_manager.cc Save and Load): states in page-locked buffers lent by a
  // HostStatePool, so the scheduler thread makes one device copy and no host copy; blobs from a
  // recycler, given back when the store lets go of a blob (the dir and Redis stores once it is
  // written, the memory store when a session is saved again or evicted).
  HostStatePool host_states(backend->shared_host_allocator(), bytes, 8);
  Recycler<session::SnapshotBuffer> blobs(4);
  auto take_pinned = [&]() -> absl::StatusOr<std::shared_ptr<SequenceState>> {
    std::shared_ptr<SequenceState> taken = host_states.Take();
    if (taken == nullptr) return absl::InternalError("the host state pool lent nothing");
    return taken;
  };
  HGRN2_ASSIGN_OR_RETURN(
      rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
        HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<SequenceState> out, take_pinned());
        HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, out->pinned));
        std::shared_ptr<session::SnapshotBuffer> saved = blobs.Take();
        session::SerializeInto(saved->bytes, expected.model_fingerprint, expected.layout, 1000,
                               absl::Now(), 42, out->view());
        return absl::OkStatus();
      }));
  Report("save as the server does (ReadHost into pinned, Serialize)", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
                           HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<SequenceState> out,
                                                  take_pinned());
                           return pool->ReadHost(slot, out->pinned);
                         }));
  Report("  of which on the scheduler thread (ReadHost)", rate, bytes);
  // The same with every blob kept, as the memory store keeps new sessions: fresh memory each time.
  std::vector<std::string> kept;
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
                           HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<SequenceState> out,
                                                  take_pinned());
                           HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, out->pinned));
                           kept.push_back(serialize(out->view()));
                           return absl::OkStatus();
                         }));
  Report("  the same, each blob kept (fresh memory)", rate, bytes);
  kept.clear();
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
                           HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<SequenceState> in, take_pinned());
                           HGRN2_ASSIGN_OR_RETURN(session::SnapshotHeader header,
                                                  session::ParseInto(blob, expected, in->pinned));
                           in->pending_token = header.pending_token;
                           return pool->WriteHost(slot, in->view());
                         }));
  Report("resume as the server does (ParseInto pinned, WriteHost)", rate, bytes);
  {
    HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<SequenceState> in, take_pinned());
    HGRN2_RETURN_IF_ERROR(session::ParseInto(blob, expected, in->pinned).status());
    HGRN2_ASSIGN_OR_RETURN(
        rate, BestRate(flags.reps, bytes, [&] { return pool->WriteHost(slot, in->view()); }));
    Report("  of which on the scheduler thread (WriteHost)", rate, bytes);
    std::vector<std::byte> written(bytes);
    HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, absl::MakeSpan(written)));
    if (written != state || !std::equal(written.begin(), written.end(), in->view().begin())) {
      return absl::InternalError("the state did not round-trip through page-locked states");
    }
  }

  // The paths before page-locked states (E16), for comparison: the slot staged through one
  // page-locked buffer and copied out of or into a recycled pageable state on the scheduler
  // thread, the snapshot checked, then copied.
  Recycler<SequenceState> states(4);
  Recycler<std::string> old_blobs(4);  // cleared when given back: appended to, not overwritten
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&] {
                           HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, pinned_bytes));
                           std::shared_ptr<SequenceState> out = states.Take();
                           out->bytes.assign(pinned_bytes.begin(), pinned_bytes.end());
                           std::shared_ptr<std::string> saved = old_blobs.Take();
                           session::SerializeInto(*saved, expected.model_fingerprint,
                                                  expected.layout, 1000, absl::Now(), 42,
                                                  out->bytes);
                           return absl::OkStatus();
                         }));
  Report("save before E16 (staged, copy out, Serialize)", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&] {
                           HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, pinned_bytes));
                           std::shared_ptr<SequenceState> out = states.Take();
                           out->bytes.assign(pinned_bytes.begin(), pinned_bytes.end());
                           return absl::OkStatus();
                         }));
  Report("  of which on the scheduler thread (ReadHost, copy)", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
                           HGRN2_ASSIGN_OR_RETURN(session::SnapshotView view,
                                                  session::ParseView(blob, expected));
                           std::shared_ptr<SequenceState> in = states.Take();
                           session::CopyState(view, *in);
                           std::memcpy(pinned_bytes.data(), in->bytes.data(), bytes);
                           return pool->WriteHost(slot, pinned_bytes);
                         }));
  Report("resume before E16 (ParseView, copy in, staged)", rate, bytes);

  // Import: what resuming a session costs, from the snapshot's bytes to the slot.
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
                           HGRN2_ASSIGN_OR_RETURN(session::Snapshot parsed,
                                                  session::Parse(blob, expected));
                           return pool->WriteHost(slot, parsed.state.bytes);
                         }));
  Report("import: Parse (copy) + WriteHost", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(
      rate, BestRate(flags.reps, bytes, [&]() -> absl::Status {
        HGRN2_ASSIGN_OR_RETURN(session::SnapshotView view, session::ParseView(blob, expected));
        return pool->WriteHost(
            slot, absl::MakeConstSpan(reinterpret_cast<const std::byte*>(view.payload.data()),
                                      view.payload.size()));
      }));
  Report("import: ParseView (no copy) + WriteHost", rate, bytes);
  HGRN2_ASSIGN_OR_RETURN(rate, BestRate(flags.reps, bytes, [&] {
                           return session::ParseView(blob, expected).status();
                         }));
  Report("  of which ParseView (XXH3 checksums)", rate, bytes);
  HGRN2_RETURN_IF_ERROR(pool->ReadHost(slot, absl::MakeSpan(state)));
  HGRN2_ASSIGN_OR_RETURN(session::Snapshot round_trip, session::Parse(blob, expected));
  if (round_trip.state.bytes != state) return absl::InternalError("the state did not round-trip");

  // Stores: Put then Get of `sessions` distinct sessions.
  const std::filesystem::path dir = flags.dir.empty()
                                        ? std::filesystem::temp_directory_path() /
                                              absl::StrCat("hgrn2-session-bench-", ::getpid())
                                        : std::filesystem::path(flags.dir);
  auto shared_blob = std::make_shared<const std::string>(blob);
  for (const char* kind : {"memory", "dir"}) {
    session::SessionStoreOptions options;
    options.kinds = {kind};
    options.memory_bytes = static_cast<int64_t>(shared_blob->size()) * (flags.sessions + 1);
    options.dir = dir.string();
    HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<session::SessionStore> store,
                           session::MakeSessionStore(options));
    const size_t total = shared_blob->size() * static_cast<size_t>(flags.sessions);
    Clock::time_point start = Clock::now();
    for (int i = 0; i < flags.sessions; ++i) {
      HGRN2_RETURN_IF_ERROR(store->Put({"", absl::StrCat("s", i)}, shared_blob).status());
    }
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-6s store Put: %8.1f sessions/s %8.2f GB/s%s\n", kind, flags.sessions / seconds,
                static_cast<double>(total) / seconds / 1e9,
                std::string(kind) == "dir" ? " (fsync each)" : " (no copy: the blob is shared)");
    start = Clock::now();
    for (int i = 0; i < flags.sessions; ++i) {
      HGRN2_ASSIGN_OR_RETURN(auto got, store->Get({"", absl::StrCat("s", i)}));
      if (got->size() != shared_blob->size())
        return absl::InternalError("store returned a bad size");
    }
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-6s store Get: %8.1f sessions/s %8.2f GB/s\n", kind, flags.sessions / seconds,
                static_cast<double>(total) / seconds / 1e9);
  }
  if (flags.dir.empty()) std::filesystem::remove_all(dir);
  return absl::OkStatus();
}

}  // namespace
}  // namespace hgrn2

int main(int argc, char** argv) {
  hgrn2::Flags flags;
  CLI::App app{"hgrn2-session-bench: session export/import and store throughput"};
  app.add_option("--preset", flags.preset, "State shape: 1.3b (24 MiB), 370m or tiny");
  app.add_option("--device", flags.device, "cuda, cpu or auto");
  app.add_option("--state-dtype", flags.state_dtype, "f32 or bf16");
  app.add_option("--reps", flags.reps, "Timed repetitions (the best is reported)");
  app.add_option("--sessions", flags.sessions, "Sessions put and got per store");
  app.add_option("--dir", flags.dir, "Folder for the dir store (default: a temporary one)");
  CLI11_PARSE(app, argc, argv);
  if (absl::Status status = hgrn2::Run(flags); !status.ok()) {
    std::fprintf(stderr, "hgrn2-session-bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

// kv-store-writes: a fixed write workload on a lone Store (no gRPC), for
// instruction counts under callgrind and before/after comparisons of the
// write path: --writes Sets of --value_size bytes over --keys keys
// ("key:%010d", in a fixed pseudo-random order), --batch mutations per
// Store::Write, at most --in_flight writes waiting for their callback.
//
//   kv-store-writes --dir=/dev/shm/x [--writes=200000] [--keys=100000]
//                   [--value_size=100] [--batch=1] [--in_flight=64] [--fsync=no]
//
// The directory must not exist or be empty; it is left behind for the caller
// to remove. Prints the wall time and writes per second (indicative only: use
// `valgrind --tool=callgrind` instruction counts to compare CPU per write).
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/storage/store.h"
#include "gflags/gflags.h"

DEFINE_string(dir, "", "Data directory of the store (new or empty)");
DEFINE_uint64(writes, 200000, "Mutations to write");
DEFINE_uint64(keys, 100000, "Distinct keys written");
DEFINE_uint64(value_size, 100, "Bytes per value");
DEFINE_uint64(batch, 1, "Mutations per Store::Write");
DEFINE_uint64(in_flight, 64, "Writes waiting for their callback, at most");
DEFINE_string(fsync, "no", "Fsync policy: always, everysec or no");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("a fixed write workload on a lone Store (see the source's header)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_dir.empty() || FLAGS_batch == 0 || FLAGS_in_flight == 0 || FLAGS_keys == 0) {
    std::fprintf(stderr, "kv-store-writes: --dir is required; --batch, --in_flight, --keys > 0\n");
    return 2;
  }
  absl::StatusOr<kvstore::FsyncPolicy> fsync = kvstore::ParseFsyncPolicy(FLAGS_fsync);
  if (!fsync.ok()) {
    std::fprintf(stderr, "kv-store-writes: %s\n", fsync.status().ToString().c_str());
    return 2;
  }
  kvstore::StoreOptions options;
  options.dir = FLAGS_dir;
  options.fsync = *fsync;
  options.snapshot_every_writes = 0;
  options.snapshot_every_seconds = 0;
  options.background_maintenance = false;
  absl::StatusOr<std::unique_ptr<kvstore::Store>> store = kvstore::Store::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "kv-store-writes: %s\n", store.status().ToString().c_str());
    return 1;
  }

  const std::string value(FLAGS_value_size, 'v');
  std::mt19937_64 rng(1);
  absl::Mutex mu;
  uint64_t waiting = 0;  // Guarded by mu.
  uint64_t failed = 0;   // Guarded by mu.
  const absl::Time start = absl::Now();
  for (uint64_t done = 0; done < FLAGS_writes;) {
    std::vector<kvstore::Mutation> batch;
    for (uint64_t i = 0; i < FLAGS_batch && done < FLAGS_writes; ++i, ++done) {
      kvstore::Mutation m;
      m.key = absl::StrFormat("key:%010d", rng() % FLAGS_keys);
      m.value = value;
      batch.push_back(std::move(m));
    }
    {
      absl::MutexLock l(&mu);
      const auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return waiting < FLAGS_in_flight;
      };
      mu.Await(absl::Condition(&room));
      ++waiting;
    }
    (*store)->Write(std::move(batch), kvstore::Durability::kDefault,
                    [&](std::vector<kvstore::MutationResult> results) {
                      absl::MutexLock l(&mu);
                      --waiting;
                      for (const kvstore::MutationResult& r : results) failed += !r.status.ok();
                    });
  }
  {
    absl::MutexLock l(&mu);
    const auto idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return waiting == 0; };
    mu.Await(absl::Condition(&idle));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (absl::Status s = (*store)->Close(); !s.ok()) {
    std::fprintf(stderr, "kv-store-writes: close: %s\n", s.ToString().c_str());
    return 1;
  }
  absl::MutexLock l(&mu);
  std::printf("writes %llu, batch %llu, fsync %s: %.3f s, %.0f writes/s, %llu failed\n",
              static_cast<unsigned long long>(FLAGS_writes),
              static_cast<unsigned long long>(FLAGS_batch), FLAGS_fsync.c_str(), seconds,
              static_cast<double>(FLAGS_writes) / seconds, static_cast<unsigned long long>(failed));
  return failed == 0 ? 0 : 1;
}

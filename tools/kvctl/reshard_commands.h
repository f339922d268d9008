// `kvctl reshard`: the operator's side of online resharding
// (docs/resharding.md, "Operator guide"). kvctl only reads and writes records
// in etcd; the driver in kv-shard moves the data and advances the phases.
//
//   add-shard NAME | remove-shard NAME   plan (reshard_plan.h); without
//       --plan, create <P>/migrations/active and <P>/migrations/<id> in one
//       Txn guarded by the ring's mod revision
//   status [ID] [--watch]                 the migration and its sources'
//       progress (reshard_status.h)
//   throttle ID RATE | pause ID | resume ID | cancel ID
//                                         change the record, guarded by its
//                                         mod revision
//
// Errors, which kvctl turns into exit codes: INVALID_ARGUMENT (usage, bad
// flag values, no terminal to confirm on), NOT_FOUND (no such migration),
// FAILED_PRECONDITION (refused: see the message), ABORTED (not confirmed; a
// watched migration ended cancelled or failed), CANCELLED (Ctrl-C during
// --watch), UNAVAILABLE / DEADLINE_EXCEEDED (etcd).
#ifndef KVSTORE_TOOLS_KVCTL_RESHARD_COMMANDS_H_
#define KVSTORE_TOOLS_KVCTL_RESHARD_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "tools/kvctl/reshard_plan.h"

namespace kvstore::reshard {

// The flags of `kvctl reshard`, as given (checked here, by the commands that
// use them).
struct ReshardFlags {
  bool plan = false;   // add/remove: print the plan only.
  bool force = false;  // add/remove: allow a plan over kMaxMovedFraction.
  bool yes = false;    // add/remove: do not ask.
  bool watch = false;  // status: redraw every second until the migration ends.
  bool json = false;
  std::string throttle = "32MiB/s";
  std::string copy_from = "leader";
  std::string cutover_max_pause = "1s";
  int64_t handoff_lag = 1000;
};

// What the commands need from kvctl.
struct ReshardIo {
  coord::EtcdClient* etcd = nullptr;
  std::string prefix;
  // How to name this etcd in the hints printed: "--etcd=HOST:PORT ...".
  std::string etcd_flags;
  // Standard output.
  std::function<void(const std::string&)> write;
  // The size of the shard whose leader listens at `address` (Admin.Status),
  // answered within `timeout`.
  std::function<absl::StatusOr<SourceSize>(const std::string& address, absl::Duration timeout)>
      source_size;
  // Asks the operator a yes/no question; nullopt when there is no terminal
  // to ask on.
  std::function<std::optional<bool>(const std::string& question)> confirm;
  // Standard output is a terminal: progress bars, and --watch redraws.
  bool terminal = false;
  // True once the operator pressed Ctrl-C (ends --watch).
  std::function<bool()> interrupted = [] { return false; };
  std::function<absl::Time()> now = [] { return absl::Now(); };
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) { absl::SleepFor(d); };
  // A random number for migration ids.
  std::function<uint32_t()> random;
};

// How long a source's leader has to say its size for the plan's estimates.
inline constexpr absl::Duration kSourceSizeTimeout = absl::Seconds(2);
// Attempts of a guarded update that keeps meeting a concurrent write.
inline constexpr int kUpdateAttempts = 5;

// Runs `kvctl reshard ARGS...` (`args` after "reshard").
absl::Status RunReshard(const std::vector<std::string>& args, const ReshardFlags& flags,
                        const ReshardIo& io);

}  // namespace kvstore::reshard

#endif  // KVSTORE_TOOLS_KVCTL_RESHARD_COMMANDS_H_

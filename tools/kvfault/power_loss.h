// `kvfault powerloss`: after a kill -9 of a process that ran under
// libkvfault_preload.so (tests/fault/preload/), turns its directory into what
// a power cut at the kill would have left, from the journal the preload kept:
//  - every file back to the length its last fsync made durable (0 if none);
//  - entries no directory fsync covered undone: new files removed, renames
//    moved back, unlinked or replaced files brought back from the stash;
//  - optionally the dropped tail torn instead of cut cleanly: `prefix` keeps a
//    seeded random part of it, `zero-sector` keeps a random part and zeroes
//    the last 512-byte sector of what it kept (never a byte that was durable).
// Then the journal starts again from the new state (a baseline), the old one
// kept as <journal>.cut-N, and the stash is emptied.
//
// The process must be dead: nothing here guards against a concurrent writer.
#ifndef KVSTORE_TOOLS_KVFAULT_POWER_LOSS_H_
#define KVSTORE_TOOLS_KVFAULT_POWER_LOSS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvstore::fault {

enum class Tear { kNone, kPrefix, kZeroSector };

// "none", "prefix", "zero-sector".
absl::StatusOr<Tear> ParseTear(const std::string& name);

struct PowerLossOptions {
  std::string dir;
  std::string journal;
  Tear tear = Tear::kNone;
  uint64_t seed = 1;
};

struct PowerLossReport {
  int64_t files_cut = 0;  // Files whose length changed.
  int64_t bytes_dropped = 0;
  int64_t entries_removed = 0;   // Files (or directories) whose creation was not durable.
  int64_t renames_undone = 0;    // Moved back to their durable name.
  int64_t entries_restored = 0;  // Unlinked or replaced files brought back from the stash.
  int64_t overwrites = 0;        // In-place writes the cut cannot undo (journaled).
  // Durable entries whose inode is gone (not stashed): the cut cannot bring
  // them back, which the caller should treat as a failure of the harness.
  std::vector<std::string> unrestorable;
  std::vector<std::string> actions;  // One line per change, for the run's log.
  std::string Summary() const;
};

absl::StatusOr<PowerLossReport> PowerLoss(const PowerLossOptions& options);

// Watches a running process's directory for bytes its fsyncs have not yet
// made durable, so a power cut can be timed to land on some (under
// --fsync=always the window between a write and its fsync is short, and a
// cut that lands outside it tests nothing). Reads only the journal's new
// lines on each call. Not thread-safe.
class UnsyncedWatcher {
 public:
  UnsyncedWatcher(std::string dir, std::string journal)
      : dir_(std::move(dir)), journal_(std::move(journal)) {}
  // Bytes of the directory's files beyond their durable length now.
  absl::StatusOr<int64_t> UnsyncedBytes();
  // The same in two steps, by inode, for a caller that must order them
  // (acked_cut.h): the sizes of the directory's files now; then the
  // journal's new lines, after which durable() is each file's durable length.
  absl::StatusOr<std::map<uint64_t, int64_t>> Sizes() const;
  absl::Status ReadJournal();
  const std::map<uint64_t, int64_t>& durable() const { return durable_; }

 private:
  std::string dir_, journal_;
  uint64_t offset_ = 0;
  std::string partial_;
  std::map<uint64_t, int64_t> durable_;
};

// Removes a journal, its stash and its earlier cuts (e.g. with the data dir).
void RemoveJournal(const std::string& journal);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_POWER_LOSS_H_

// An in-memory FileSystem for storage tests that can lose data the way real
// machines do, so tests can check that we survive it:
//
//  - CrashProcess(): the process dies (kill -9). Bytes appended but not yet
//    Flush()ed (still in the writer's user-space buffer) are lost; everything
//    handed to the "OS" survives.
//  - CutPower(): the machine loses power. Bytes not covered by a Sync() are lost
//    (optionally only a prefix of them: a torn write), and file creations,
//    renames and removals not covered by a SyncDir() of their directory are
//    undone.
//  - FailAfter(): a chosen kind of operation starts failing (EIO-like), as a
//    full or broken disk would make it; the number injected is counted.
//  - HoldSyncs(): file Sync() calls block until released, as a slow disk makes
//    them, so a test can act while a group commit is between write and fsync;
//    ReleaseSyncs() lets them through one at a time. A Sync makes durable what
//    the file held when it started, not what another handle appended while it
//    waited: fdatasync promises no more, and a pipelined log relies on it.
//
// After a crash every handle opened before it returns an error, like the dead
// process's file descriptors. Thread-safe.
#ifndef KVSTORE_TESTS_SUPPORT_FAKE_FILE_SYSTEM_H_
#define KVSTORE_TESTS_SUPPORT_FAKE_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/storage/file_system.h"

namespace kvstore::testing {

class FakeFileSystem final : public FileSystem {
 public:
  enum class Op { kAppend, kFlush, kSync, kRename, kSyncDir, kCreate, kRemove, kTruncate, kRead };

  FakeFileSystem() = default;
  FakeFileSystem(const FakeFileSystem&) = delete;
  FakeFileSystem& operator=(const FakeFileSystem&) = delete;

  absl::StatusOr<std::unique_ptr<WritableFile>> OpenAppendable(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> CreateFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<SequentialFile>> OpenSequential(const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path) override;
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& dir) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status Truncate(const std::string& path, uint64_t size) override;
  absl::Status CreateDirs(const std::string& dir) override;
  bool Exists(const std::string& path) override;

  // Simulated failures. See the comment at the top.
  void CrashProcess();
  // Keeps the first `keep_unsynced_fraction` (0..1) of each file's unsynced bytes.
  void CutPower(double keep_unsynced_fraction = 0.0);
  // From the (n+1)-th call of `op` on, that kind of call fails until ClearFailures().
  void FailAfter(Op op, int n);
  void ClearFailures();
  int injected_failures() const;
  // While held, every file Sync() waits (before making anything durable) until
  // HoldSyncs(false); with `path_part`, only the Syncs of files whose path
  // contains it (e.g. "wal-": the log, not the EPOCH file). syncs_waiting()
  // counts the calls waiting now.
  void HoldSyncs(bool hold, std::string path_part = "");
  // While held: lets the next `n` held Syncs (waiting now or later) proceed.
  void ReleaseSyncs(int n);
  int syncs_waiting() const;

  // Direct access for tests that damage files on purpose. SetContents makes the
  // new contents durable.
  std::string Contents(const std::string& path) const;
  void SetContents(const std::string& path, std::string data);

 private:
  struct Inode {
    std::string data;     // What the OS has (flushed).
    uint64_t synced = 0;  // Prefix of data that survives a power cut.
  };
  class Writable;
  class Sequential;

  absl::Status MaybeFail(Op op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SyncMayProceed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::unique_ptr<WritableFile>> Open(const std::string& path, bool truncate);
  static std::string DirOf(const std::string& path);

  mutable absl::Mutex mu_;
  // The namespace as the running system sees it, and as it last reached disk.
  std::map<std::string, std::shared_ptr<Inode>> live_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Inode>> durable_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> dirs_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Op, int> fail_after_ ABSL_GUARDED_BY(mu_);
  std::map<Op, int> calls_ ABSL_GUARDED_BY(mu_);
  int injected_ ABSL_GUARDED_BY(mu_) = 0;
  bool hold_syncs_ ABSL_GUARDED_BY(mu_) = false;
  std::string hold_syncs_of_ ABSL_GUARDED_BY(mu_);
  int syncs_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int sync_permits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_FAKE_FILE_SYSTEM_H_

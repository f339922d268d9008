// The file-system seam of the storage layer. Production uses the POSIX file
// system; tests use FakeFileSystem (tests/support), which can drop everything
// not yet synced, as a power cut would.
#ifndef KVSTORE_COMMON_STORAGE_FILE_SYSTEM_H_
#define KVSTORE_COMMON_STORAGE_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore {

// A file open for appending. One thread at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends to the file (may buffer in user space until Flush).
  [[nodiscard]] virtual absl::Status Append(absl::string_view data) = 0;
  // Hands buffered bytes to the OS: a process crash no longer loses them.
  [[nodiscard]] virtual absl::Status Flush() = 0;
  // Flushes, then makes the bytes durable (fdatasync): a power cut no longer loses them.
  [[nodiscard]] virtual absl::Status Sync() = 0;
  [[nodiscard]] virtual absl::Status Close() = 0;
  // Bytes in the file including buffered ones.
  virtual uint64_t Size() const = 0;
};

// A file read from the start in chunks. One thread at a time.
class SequentialFile {
 public:
  virtual ~SequentialFile() = default;
  // Reads up to n bytes into *out (replacing its contents). An empty *out is end of
  // file for now: as with read(2), bytes appended to the file later are read by
  // later calls, and an open file stays readable after its name is removed.
  [[nodiscard]] virtual absl::Status Read(size_t n, std::string* out) = 0;
};

// Every method is safe to call from any thread.
class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Opens `path` for appending at its end, creating it if missing.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> OpenAppendable(const std::string& path) = 0;
  // Creates `path`, truncating any existing file.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> CreateFile(const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<SequentialFile>> OpenSequential(
      const std::string& path) = 0;
  // Reads the whole file.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  // Atomically replaces `to`. Durable only after SyncDir of the directory.
  [[nodiscard]] virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  // Makes creations, renames and removals in `dir` durable.
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Names (not paths) of the entries in `dir`, unsorted.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  [[nodiscard]] virtual absl::Status Remove(const std::string& path) = 0;
  // Cuts the file to `size` bytes and syncs it.
  [[nodiscard]] virtual absl::Status Truncate(const std::string& path, uint64_t size) = 0;
  // Creates `dir` and missing parents; no error if it exists.
  [[nodiscard]] virtual absl::Status CreateDirs(const std::string& dir) = 0;
  virtual bool Exists(const std::string& path) = 0;
};

// The process-wide POSIX file system. Never null, never deleted.
FileSystem* PosixFileSystem();

// Joins a directory and a name with exactly one '/'.
std::string JoinPath(absl::string_view dir, absl::string_view name);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_FILE_SYSTEM_H_

// Child processes, temporary directories and polling for tests that run real
// binaries on 127.0.0.1 (kv-shard, kv-replica, etcd). No gRPC here, so a test
// support file for any binary (process.h for ours, etcd_process.h for etcd)
// builds on it.
//
// Only processes started here are ever signalled, and only by their pid.
#ifndef KVSTORE_TESTS_SUPPORT_CHILD_PROCESS_H_
#define KVSTORE_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvstore {
namespace testing {

// A fresh directory under $TMPDIR (or /tmp). The destructor removes it with
// everything inside, unless the current test has failed: then it is kept and
// its path printed, so the logs and data files can be examined.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name.
  std::string Join(const std::string& name) const;

 private:
  std::string path_;
};

// How a child process ended.
struct ExitStatus {
  bool exited = false;  // Returned from main or called exit().
  int code = -1;        // Exit code, when exited.
  int signal = 0;       // Terminating signal, when !exited.

  bool Clean() const { return exited && code == 0; }
  std::string ToString() const;
};

// A process we started. The destructor SIGKILLs and reaps it if it still runs,
// so a failing test never leaves a server behind. The child also gets SIGKILL
// if this test process dies first.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Runs `binary` with `args` (argv[1..]); stdin is /dev/null, stdout goes to
  // stdout_path and stderr to stderr_path (both to stdout_path when
  // stderr_path is empty). Files are truncated.
  absl::Status Start(const std::string& binary, const std::vector<std::string>& args,
                     const std::string& stdout_path, const std::string& stderr_path = "");

  pid_t pid() const { return pid_; }
  // True from Start until WaitExit has seen the process end.
  bool running() const { return pid_ > 0; }

  // Sends `signal` to the child. Fails when it is not running.
  absl::Status Kill(int signal);

  // Polls until the child ends or `deadline` passes (DeadlineExceeded; the
  // child is left running).
  absl::StatusOr<ExitStatus> WaitExit(absl::Time deadline);

  // Kill(SIGKILL) and WaitExit: for a crash in the middle of work.
  absl::StatusOr<ExitStatus> KillHard(absl::Duration timeout = absl::Seconds(10));

 private:
  pid_t pid_ = -1;
};

// Polls `done` every `interval` until it returns true (returns true) or
// `deadline` passes (returns false). The synchronisation primitive of these
// tests: never a bare sleep.
bool WaitFor(const std::function<bool()>& done, absl::Time deadline,
             absl::Duration interval = absl::Milliseconds(10));

// Reads a whole file; an empty string when it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);
// The last `max_bytes` of a file (for failure messages).
std::string FileTail(const std::string& path, size_t max_bytes = 4000);
// Names (not paths) of the entries of `dir`, sorted, without "." and "..".
std::vector<std::string> ListDir(const std::string& dir);

}  // namespace testing
}  // namespace kvstore

#endif  // KVSTORE_TESTS_SUPPORT_CHILD_PROCESS_H_

// Child processes of the fault driver: started with fork/exec, known by pid,
// signalled only by that pid. Each child gets SIGKILL when the driver dies
// (PR_SET_PDEATHSIG), so a crashed driver leaves no server behind.
#ifndef KVSTORE_TOOLS_KVFAULT_CHILD_PROCESS_H_
#define KVSTORE_TOOLS_KVFAULT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvstore::fault {

// How a child ended.
struct ExitStatus {
  bool exited = false;  // Returned from main or called exit().
  int code = -1;
  int signal = 0;  // Terminating signal when !exited.
  std::string ToString() const;
};

// Starts `argv` (argv[0] is the binary's path) with stdin from /dev/null and
// stdout + stderr appended to `log_path`, in the driver's environment plus
// `env` ("NAME=value", replacing a variable of that name). Returns the pid.
// Call it from the main thread only: the kernel sends the death signal when
// the *thread* that forked ends, so a child started from a short-lived thread
// dies with it.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path,
                            const std::vector<std::string>& env = {});

// One non-blocking look (deadline in the past) or a poll until `deadline`.
// NOT_FOUND when `pid` is not our child; DEADLINE_EXCEEDED while it runs.
absl::StatusOr<ExitStatus> WaitExit(pid_t pid, absl::Time deadline);

// A command run to completion: exit status and what it printed.
struct CommandResult {
  ExitStatus status;
  std::string output;  // stdout and stderr together.
};
// Runs `argv` with its output in `log_path` (then read back), killing it at
// `timeout`.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& log_path, absl::Duration timeout);

// The command as a person would type it (single quotes where needed).
std::string ShellQuote(const std::vector<std::string>& argv);

// Registers a pid the driver owns, so that a SIGINT/SIGTERM of the driver
// SIGKILLs it (InstallSignalCleanup). Forget when it has been reaped.
void RememberPid(pid_t pid);
void ForgetPid(pid_t pid);
// On SIGINT or SIGTERM: SIGKILL every remembered pid, then die of the signal.
void InstallSignalCleanup();

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_CHILD_PROCESS_H_

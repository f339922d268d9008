// kv-router as a real process for integration tests, and topology files for
// it. Builds on tests/support/process.h (ChildProcess, WaitFor, CheckHealth).
#ifndef KVSTORE_TESTS_SUPPORT_ROUTER_PROCESS_H_
#define KVSTORE_TESTS_SUPPORT_ROUTER_PROCESS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/topology/topology.h"
#include "tests/support/process.h"

namespace kvstore {
namespace testing {

// Writes `topology` as a topology YAML file at `path`, atomically (a reader
// never sees half a file). vnodes is left out of the file when it is 0 (the
// router then uses the ring's default).
absl::Status WriteTopologyFile(const std::string& path, const Topology& topology);

// kv-router (KV_ROUTER_BIN of the test target), its files in one directory:
//   <dir>/port            --port-file
//   <dir>/router-N.log    stdout and stderr of the N-th start (1-based)
class RouterProcess {
 public:
  explicit RouterProcess(std::string dir);
  // Ends the router if it still runs: EndAtTeardown.
  ~RouterProcess();
  RouterProcess(const RouterProcess&) = delete;
  RouterProcess& operator=(const RouterProcess&) = delete;

  // Starts kv-router --listen=127.0.0.1:0 --topology=`topology_file` (left
  // out when empty, for a --config that names it) plus `extra_flags`, and waits until the port file
  // names its address and a health check answers SERVING. Errors carry the log's tail.
  absl::Status Start(const std::string& topology_file,
                     const std::vector<std::string>& extra_flags = {},
                     absl::Duration timeout = absl::Seconds(20));
  // Runs it with the same arguments and waits for it to exit without serving.
  absl::StatusOr<ExitStatus> RunExpectingExit(const std::string& topology_file,
                                              const std::vector<std::string>& extra_flags = {},
                                              absl::Duration timeout = absl::Seconds(20));

  // SIGHUP (reload the topology), then waits until the log reports the
  // reload's outcome: OK once it took effect, the logged error otherwise.
  absl::Status Reload(absl::Duration timeout = absl::Seconds(20));

  // SIGTERM and wait for the exit.
  absl::StatusOr<ExitStatus> Terminate(absl::Duration timeout = absl::Seconds(20));

  // Lines of the current log that contain `needle`.
  int CountLogLines(const std::string& needle) const;
  // Polls until a line of the current log contains `needle`; the error
  // carries the log's tail.
  absl::Status AwaitLogLine(const std::string& needle,
                            absl::Duration timeout = absl::Seconds(10)) const;

  // "127.0.0.1:PORT" once started.
  const std::string& address() const { return address_; }
  std::string log_path() const;
  std::string LogTail(size_t max_bytes = 4000) const { return FileTail(log_path(), max_bytes); }
  ChildProcess& process() { return process_; }

 private:
  std::vector<std::string> Args(const std::string& topology_file,
                                const std::vector<std::string>& extra_flags) const;

  std::string dir_;
  std::string address_;
  int starts_ = 0;
  int reloads_ = 0;  // Outcomes (success or error) logged so far.
  ChildProcess process_;
};

}  // namespace testing
}  // namespace kvstore

#endif  // KVSTORE_TESTS_SUPPORT_ROUTER_PROCESS_H_

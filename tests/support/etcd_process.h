// A one-member etcd (Debian's /usr/bin/etcd, 3.4) for tests, on 127.0.0.1
// with free client and peer ports and its own temporary directory:
//   <dir>/data        --data-dir
//   <dir>/etcd-N.log  stdout and stderr of the N-th start
// Start waits until etcd answers a linearizable Range (it has elected itself
// and serves). Stop sends SIGTERM, then SIGKILL if it has not exited within
// the grace period; Restart starts it again on the same directory and ports,
// so clients keep their endpoint and the data (revisions, leases) survives.
// The destructor stops it and removes the directory (kept when the test
// failed, see TempDir).
//
// Only the etcd started here is ever signalled, and only by its pid.
#ifndef KVSTORE_TESTS_SUPPORT_ETCD_PROCESS_H_
#define KVSTORE_TESTS_SUPPORT_ETCD_PROCESS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/support/child_process.h"

namespace kvstore::testing {

class EtcdProcess {
 public:
  // `binary` defaults to Debian's etcd.
  explicit EtcdProcess(std::string binary = "/usr/bin/etcd");
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // Picks free ports and starts etcd with `extra_flags` added. A start that
  // exits before answering (a port taken meanwhile) is retried on new ports.
  absl::Status Start(const std::vector<std::string>& extra_flags = {},
                     absl::Duration timeout = absl::Seconds(30));
  // SIGTERM; SIGKILL after `grace`. OK when it was not running.
  absl::Status Stop(absl::Duration grace = absl::Seconds(10));
  // Same flags, directory and ports as the last Start; retried while the
  // ports are still held.
  absl::Status Restart(absl::Duration timeout = absl::Seconds(30));

  // "127.0.0.1:PORT" of the client URL (kept while stopped).
  const std::string& endpoint() const { return endpoint_; }
  bool running() const { return process_.running(); }
  ChildProcess& process() { return process_; }
  std::string dir() const { return dir_.path(); }
  std::string LogTail(size_t max_bytes = 3000) const;

 private:
  // One launch on the current ports, then wait for an answer.
  absl::Status Launch(absl::Time deadline);
  absl::Status AwaitAnswering(absl::Time deadline);

  const std::string binary_;
  TempDir dir_;
  std::vector<std::string> extra_flags_;
  int client_port_ = 0;
  int peer_port_ = 0;
  std::string endpoint_;
  int starts_ = 0;
  ChildProcess process_;
};

// A port on 127.0.0.1 nobody listened on a moment ago (0 on failure).
int PickFreePort();

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_ETCD_PROCESS_H_

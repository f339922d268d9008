// The routers of a fault run (scenario field `routers: N`, etcd mode only):
// N kv-router processes r0..rN-1 on 127.0.0.1, each following the run's etcd
// for the topology and the leaders (--etcd-endpoints), so a failover needs no
// help from the driver. Every router lives in <run>/routers/<name>/ with
//   port         --port-file (the bound address, read back after the start)
//   <name>-1.log stdout and stderr
// Every process is started here, known by pid and signalled only by it.
//
// Not thread-safe: the driver's main thread starts and stops them;
// addresses() is fixed once Start returned, so the clients may read it then.
#ifndef KVSTORE_TOOLS_KVFAULT_ROUTERS_H_
#define KVSTORE_TOOLS_KVFAULT_ROUTERS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace kvstore::fault {

struct RoutersOptions {
  std::string run_dir;
  std::string bin_dir;        // kv-router.
  std::string etcd_endpoint;  // "127.0.0.1:PORT" of the run's etcd.
  int count = 0;
  std::string lease_ttl = "2s";  // Of each router's registration in etcd.
  // Deadline of a forwarded request when the client set none (ours set one).
  int64_t forward_timeout_ms = 2000;
};

class Routers {
 public:
  explicit Routers(RoutersOptions options);
  // SIGKILLs and reaps every router still running.
  ~Routers();
  Routers(const Routers&) = delete;
  Routers& operator=(const Routers&) = delete;

  // Starts every router, then waits until each has bound its port and routes
  // a leader read (of a key nobody writes) to a shard. The error names the
  // router and ends with the tail of its log.
  absl::Status Start(absl::Time deadline);

  // "127.0.0.1:PORT" of each router, in name order.
  const std::vector<std::string>& addresses() const { return addresses_; }

  // The command line of each router, for the run's record.
  std::vector<std::string> CommandLines() const;

  // SIGTERMs every router and waits until `deadline` for each to exit with
  // code 0; the error names the others (SIGKILLed at the deadline).
  absl::Status StopAll(absl::Time deadline);

  std::string LogTails(size_t bytes = 1500) const;

 private:
  struct Router {
    std::string name;
    std::string dir;
    std::vector<std::string> argv;
    pid_t pid = -1;
  };
  absl::Status AwaitRouting(const Router& r, absl::Time deadline, std::string* address);

  RoutersOptions options_;
  std::vector<Router> routers_;
  std::vector<std::string> addresses_;
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_ROUTERS_H_

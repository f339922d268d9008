// The network faults of the nemesis (scenario.h, action `net`; the
// Nemesis methods Net, ProbeWrite and HealNetwork live in
// nemesis_network.cc) and the figures they are judged by:
//   isolation windows  from the step after which every link from the leader
//                      to its followers is blackholed, to the step after
//                      which one is not (a heal, or a promotion that made
//                      another node the leader); the writes acknowledged
//                      inside one show a leader that acknowledged alone
//   full resyncs       snapshots the leader sent its followers (Admin.Status)
#ifndef KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_
#define KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/kvcheck/durability.h"
#include "tools/kvcheck/history.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/scenario.h"
#include "tools/kvfault/tcp_proxy.h"

namespace kvstore::fault {

// A step's fault must be applied within this long of the step's timestamp
// (the proxies look at their faults every 10 ms): a write invoked earlier
// than start + grace may have been replicated before the fault.
constexpr int64_t kIsolationGraceNs = 50'000'000;

// Checks a `net` step's link and mode (when the scenario is loaded).
absl::Status CheckNetStep(const Step& step);

// The faults a `net` step's mode sets; reset sets none (it is one-shot).
LinkFaults FaultsOf(const Step& step);

// The link names ("n0->n1", "client->n0") a pattern names now. `leader` is
// the node that leads; `nodes` every node's name.
absl::StatusOr<std::vector<std::string>> ResolveLinks(const std::string& pattern,
                                                      const std::string& leader,
                                                      const std::vector<std::string>& nodes);

struct IsolationWindow {
  std::string leader;
  int64_t start_ns = 0;
  int64_t end_ns = -1;  // -1: still open.
};

struct IsolationFigures {
  int64_t windows = 0;
  double seconds = 0;  // Their total length.
  // `ok` writes invoked after a window's start (plus the grace) and
  // acknowledged before its end.
  int64_t acked = 0;
  // Of those, how many the final reads lost (async: the lost-ack rate).
  int64_t lost = 0;
  std::vector<int> acked_ops;  // History::ops ids, the first few.
};

IsolationFigures ComputeIsolation(const check::History& h, const check::DurabilityFigures& d,
                                  const std::vector<IsolationWindow>& windows, int64_t end_ns);

// Snapshots the leader reports it sent, over its followers, and a per
// follower note ("n2 1").
absl::StatusOr<int64_t> FullResyncs(Cluster* cluster, std::string* detail);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_

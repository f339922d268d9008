// What the nemesis's network steps mean, apart from any process (scenario.h,
// action `net`; carried out by nemesis_network.cc):
//   a step's faults  LinkFaults for its mode (reset is one-shot: none)
//   link patterns    "A->B" / "A<->B" resolved to link names ("n0->n1",
//                    "client->n0") given who leads
//   isolation        windows from the step after which every link from the
//                    leader to its followers is blackholed to the step after
//                    which one is not (a heal, or a promotion that made
//                    another node the leader); the writes acknowledged
//                    inside one show a leader that acknowledged alone
#ifndef KVSTORE_TOOLS_KVFAULT_NET_FAULTS_H_
#define KVSTORE_TOOLS_KVFAULT_NET_FAULTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/kvcheck/durability.h"
#include "tools/kvcheck/history.h"
#include "tools/kvfault/tcp_proxy.h"

namespace kvstore::fault {

// The fields of a `net` step.
struct NetStep {
  std::string link;
  // blackhole | delay | rate | refuse | reset | heal.
  std::string mode;
  double delay_ms = 0;
  double jitter_ms = 0;
  double rate_kbps = 0;  // Kilobits per second.
};

// A step's fault must be applied within this long of the step's timestamp
// (the proxies look at their faults every 10 ms): a write invoked earlier
// than start + grace may have been replicated before the fault.
constexpr int64_t kIsolationGraceNs = 50'000'000;

// Checks a step's mode, link syntax and numbers (when the scenario is loaded).
absl::Status CheckNetStep(const NetStep& step);

// The faults a step's mode sets; reset sets none (it is one-shot).
LinkFaults FaultsOf(const NetStep& step);

// The link names ("n0->n1", "client->n0") a pattern names now. `leader` is
// the node that leads; `nodes` every node's name. A side is a node, `leader`,
// `followers` (every node but the leader) or `*`; the sending side may be
// `client`; a link from a node to itself is left out. One side may be `etcd`
// (etcd mode): the other side's nodes' links to etcd ("n0->etcd"), whichever
// way the arrow points, since each carries both directions.
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
  // `ok` writes that changed their key, invoked after a window's start plus
  // kIsolationGraceNs and acknowledged before its end (or `end_ns`).
  int64_t acked = 0;
  // Of those, how many the final reads lost (async: the lost-ack rate).
  int64_t lost = 0;
  std::vector<int> acked_ops;  // History::ops ids, the first few.
};

IsolationFigures ComputeIsolation(const check::History& h, const check::DurabilityFigures& d,
                                  const std::vector<IsolationWindow>& windows, int64_t end_ns);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NET_FAULTS_H_

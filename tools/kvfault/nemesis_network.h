// The nemesis's network steps are carried out in nemesis_network.cc (the
// Nemesis methods Net, ProbeWrite, HealNetwork, UpdateIsolation; what the
// steps mean is in net_faults.h). And one figure read from the cluster:
//   full resyncs  snapshots the leader sent its followers (Admin.Status)
#ifndef KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_
#define KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/net_faults.h"

namespace kvstore::fault {

// Snapshots the leader reports it sent, over its followers; *detail names
// each follower's ("leader n0: 127.0.0.1:PORT 1, ...").
absl::StatusOr<int64_t> FullResyncs(Cluster* cluster, std::string* detail);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NEMESIS_NETWORK_H_

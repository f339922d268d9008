// `kvctl --etcd=E promote SHARD [--to ID] [--force]`: a graceful leadership
// transfer in etcd mode (docs/failover.md §8a). kvctl only writes the request
// and watches: the leader pauses writes until the target holds its whole log
// (at most 2 s), resigns, and the target wins the election that follows.
#ifndef KVSTORE_TOOLS_KVCTL_PROMOTE_TRANSFER_H_
#define KVSTORE_TOOLS_KVCTL_PROMOTE_TRANSFER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"

namespace kvstore {

struct TransferRequest {
  std::string prefix;  // --etcd-prefix.
  std::string shard;
  std::string to;  // "" = the most advanced eligible member other than the leader.
  bool force = false;
  // How long the request stands (its deadline) and kvctl waits for the target to lead.
  absl::Duration timeout = absl::Seconds(5);
};

// Writes <P>/shards/<s>/handoff guarded by the leader key's mod revision (the
// leader read is still the leader) and by the absence of a pending request,
// then waits until the leader key names the target at a confirmed epoch.
// Returns the line to print: "transferred shard s0 from n1 to n2 at epoch E;
// writes paused N ms". Errors: FAILED_PRECONDITION (nothing written) when the
// shard has no leader, the target is no live member, is the leader, is not
// whole (or, without force, holds no data or is outside the in-sync set), or
// a request is already pending; UNAVAILABLE when the leader gave up because
// the target did not catch up within 2 s (nothing changed); ABORTED when
// another member won the election; DEADLINE_EXCEEDED when nothing was
// decided within `timeout`. `progress` gets a line to show while waiting.
absl::StatusOr<std::string> PromoteTransfer(
    coord::EtcdClient* etcd, const TransferRequest& request,
    const std::function<void(const std::string&)>& progress);

}  // namespace kvstore

#endif  // KVSTORE_TOOLS_KVCTL_PROMOTE_TRANSFER_H_

// What the KeyValue and Admin services need from replication, as an interface
// so that they do not depend on it: a lone shard passes none, kv-shard and
// kv-replica pass their ReplicationNode (common/replication/node.h).
#ifndef KVSTORE_COMMON_REPLICATION_REPLICATION_HOOKS_H_
#define KVSTORE_COMMON_REPLICATION_REPLICATION_HOOKS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/v1/admin.pb.h"

namespace kvstore {

class ReplicationHooks {
 public:
  virtual ~ReplicationHooks() = default;

  // OK when this node takes writes now. Otherwise the error to return:
  // FAILED_PRECONDITION naming the leader (a replica, a deposed leader), or
  // UNAVAILABLE (retryable); *leader is then the leader's address for the
  // "kv-leader" trailing metadata, or "" when unknown.
  virtual absl::Status CheckWritable(std::string* leader) = 0;

  // OK when this node may answer a read now. A leader read (`leader_read`)
  // needs the leader of the current epoch: FAILED_PRECONDITION naming the
  // leader (*leader, as above) elsewhere. Any read needs a node whose state is
  // whole: UNAVAILABLE with the reason on a replica that has not caught up
  // since it started, is installing a snapshot, or diverged, and on a deposed
  // node or a leader still confirming its followers' positions.
  virtual absl::Status CheckReadable(bool leader_read, std::string* leader) = 0;

  // A write forwarded by a router that believes the shard's leader leads
  // `epoch` (its kv-leader-epoch metadata; 0 = unknown: OK). OK when `epoch`
  // is not newer than every epoch this node knows (a lower one: the router is
  // behind, the write is served as usual). Otherwise a newer leader exists:
  // FAILED_PRECONDITION (NOT_LEADER, nothing applied, *leader ""), and a
  // leader fences itself (ReplicationNode::CheckRouterEpoch). Checked before
  // CheckWritable.
  virtual absl::Status CheckRouterEpoch(uint64_t /*epoch*/, std::string* leader) {
    leader->clear();
    return absl::OkStatus();
  }

  // Followers a write waits for when its request does not say (0 = async).
  virtual int DefaultSyncAcks() = 0;
  // Followers configured on this leader.
  virtual int FollowerCount() = 0;

  // Calls `done` once `replicas` followers have confirmed everything through
  // `index` as durable: OK, or DEADLINE_EXCEEDED after the sync timeout (the
  // write stays on the leader), or UNAVAILABLE when the node stops first.
  virtual void AwaitReplicas(uint64_t index, int replicas,
                             std::function<void(const absl::Status&)> done) = 0;

  // OK while a write this node has admitted and logged may be acknowledged.
  // A node whose leadership is leased (etcd mode) answers UNAVAILABLE
  // ("leadership lost") once the lease is gone, so nothing is acknowledged
  // after it; static mode always acknowledges.
  virtual absl::Status CheckAcknowledge() { return absl::OkStatus(); }

  // Role and replication fields of Admin.Status (role, epoch, followers, lag...).
  virtual void FillStatus(v1::StatusResponse* response) = 0;

  // Admin.Promote: makes this node the leader with `epoch` (0 = current + 1),
  // pushing to `followers` (empty = the configured ones). First asks each of
  // them for its position: FAILED_PRECONDITION when one holds entries this
  // node lacks, or cannot be asked, unless `force` (the result then says how
  // many entries may be lost). Blocks until the epoch is durable.
  struct PromoteResult {
    uint64_t epoch = 0;
    uint64_t entries_may_be_lost = 0;
    std::string warning;
  };
  virtual absl::StatusOr<PromoteResult> Promote(uint64_t epoch, std::vector<std::string> followers,
                                                bool force) = 0;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_REPLICATION_HOOKS_H_

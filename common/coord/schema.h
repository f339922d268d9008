// The keys and values of a cluster in etcd, under one prefix (--etcd-prefix,
// default /kvstore/<cluster>), as docs/failover.md §1 lists them. Values are
// JSON objects so that `etcdctl get --prefix` is readable. Pure: no I/O.
//
//   <P>/cluster                     {format, epoch_base, vnodes}
//   <P>/shards/<s>/spec             {format}
//   <P>/shards/<s>/leader           {id, addr, epoch}        (LeaderKey, leader_key.h)
//   <P>/shards/<s>/members/<id>     {addr, state, last_epoch, durable_index}
//   <P>/shards/<s>/isr              {epoch, members}          (the leader, guarded)
#ifndef KVSTORE_COMMON_COORD_SCHEMA_H_
#define KVSTORE_COMMON_COORD_SCHEMA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore::coord {

// Above any epoch a static-mode cluster reaches (each restart or promotion
// adds one): the epoch_base `kvctl cluster init` uses when it cannot ask the
// nodes, so moving to etcd mode never lowers an epoch.
inline constexpr int64_t kDefaultEpochBase = int64_t{1} << 20;

// "/kvstore/<cluster>", or "/kvstore/default" for an unnamed cluster.
std::string DefaultPrefix(absl::string_view cluster);
// The prefix without trailing slashes ("/" stays "").
std::string NormalizePrefix(absl::string_view prefix);

std::string ClusterKey(absl::string_view prefix);
// Every key of every shard: "<P>/shards/".
std::string ShardsPrefix(absl::string_view prefix);
// Every key of shard `shard`: "<P>/shards/<s>/".
std::string ShardPrefix(absl::string_view prefix, absl::string_view shard);
std::string ShardSpecKey(absl::string_view prefix, absl::string_view shard);
std::string ShardLeaderKey(absl::string_view prefix, absl::string_view shard);
std::string MembersPrefix(absl::string_view prefix, absl::string_view shard);
std::string MemberKey(absl::string_view prefix, absl::string_view shard, absl::string_view id);
std::string IsrKey(absl::string_view prefix, absl::string_view shard);

struct ClusterRecord {
  int format = 1;
  int64_t epoch_base = 0;
  int vnodes = 0;
};
std::string ClusterValue(const ClusterRecord& record);
// INVALID_ARGUMENT when it is not what ClusterValue writes.
absl::StatusOr<ClusterRecord> ParseClusterValue(absl::string_view value);

// What a member says of itself. state: "leader", "replica", "deposed" (its
// role), or what keeps its store from being whole: "installing" (a snapshot
// install has not completed), "empty" (it holds no entry at all).
struct MemberRecord {
  std::string id;
  std::string addr;
  std::string state;
  uint64_t last_epoch = 0;
  uint64_t durable_index = 0;
  bool operator==(const MemberRecord& o) const {
    return id == o.id && addr == o.addr && state == o.state && last_epoch == o.last_epoch &&
           durable_index == o.durable_index;
  }
  bool operator!=(const MemberRecord& o) const { return !(*this == o); }
};
// The id is the key's last part, not part of the value.
std::string MemberValue(const MemberRecord& record);
absl::StatusOr<MemberRecord> ParseMemberValue(absl::string_view id, absl::string_view value);

// The in-sync set of a sync-mode leadership: the leader of `epoch` and the
// followers that hold every write it acknowledged (docs/failover.md). Ids,
// sorted, the leader first.
struct IsrRecord {
  int64_t epoch = 0;
  std::vector<std::string> members;
  bool Contains(absl::string_view id) const;
};
std::string IsrValue(const IsrRecord& record);
absl::StatusOr<IsrRecord> ParseIsrValue(absl::string_view value);

// The leader key's value as a plain record (what a watch or a reader that
// does not need revisions sees). epoch is 0 until the winner confirmed it.
struct LeaderValueRecord {
  std::string id;
  std::string addr;
  int64_t epoch = 0;
};
absl::StatusOr<LeaderValueRecord> ParseLeaderJson(absl::string_view value);

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_SCHEMA_H_
